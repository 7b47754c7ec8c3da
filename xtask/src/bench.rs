//! `cargo xtask bench [--quick] [--out FILE]`: agentbox side by side with bare exec, bubblewrap
//! and firejail; regenerates docs/benchmarks.md.
//!
//! Every comparison runs its variants alternately in one run (A B C A B C ...), after one
//! discarded warm-up round, and quotes medians, min-max and ratios against bare. Everything
//! happens in a throwaway directory under /tmp with a temporary HOME; the agentbox binary is a
//! release build. The timing harness is hand-written because xtask depends on std and
//! serde_json only (it must compile in seconds on a fresh machine).

use std::fmt::Write as _;
use std::fs;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{cargo_executables, root, Res};

/// uid/gid of `nobody` on Debian: the unprivileged runs.
const NOBODY: u32 = 65534;
/// Where ebpf-probes pins its programs and maps; removed before each cold run.
const PIN_DIR: &str = "/sys/fs/bpf/agentbox";

pub(crate) fn bench(args: &[String]) -> Res<()> {
    let mut quick = false;
    let mut out = root().join("docs/benchmarks.md");
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--out" => out = PathBuf::from(args.next().ok_or("--out needs a FILE")?),
            other => {
                return Err(format!(
                    "unknown option `{other}`; usage: cargo xtask bench [--quick] [--out FILE]"
                ))
            }
        }
    }
    if !is_root() {
        return Err(
            "cargo xtask bench must run as root: it compares agentbox as root (all \
                    host layers) and as `nobody`, and unpins eBPF programs for cold runs"
                .into(),
        );
    }
    for tool in ["bwrap", "firejail", "/usr/bin/python3", "tar", "gzip"] {
        if !tool_exists(tool) {
            return Err(format!("`{tool}` is missing: run `cargo xtask setup`"));
        }
    }
    let started = Instant::now();
    let load_before = loadavg();
    let sizes = if quick { Sizes::QUICK } else { Sizes::FULL };

    let agentbox = build_release_agentbox()?;
    let scratch = Scratch::new()?;
    let env = Env::prepare(&scratch.0, &agentbox)?;
    let listener = LoopbackSink::start()?;
    let profiles = Profiles::write(&env, listener.port)?;

    let mut doc = Doc::default();
    println!("\n== bench: start-up");
    startup(&env, &sizes, &mut doc)?;
    println!("\n== bench: workspace size");
    workspace_size(&env, &sizes, &mut doc)?;
    println!("\n== bench: idle cost");
    idle_cost(&env, &sizes, &mut doc)?;
    println!("\n== bench: per-operation cost");
    operations(&env, &profiles, &sizes, listener.port, &mut doc)?;
    println!("\n== bench: real workloads");
    workloads(&env, &profiles, &sizes, &mut doc)?;
    println!("\n== bench: event pipeline and supervisor resources");
    events(&env, &profiles, &sizes, &mut doc)?;

    let machine = Machine::collect(&agentbox, load_before, quick, started);
    let text = doc.render(&machine);
    fs::write(&out, text).map_err(|e| format!("{}: {e}", out.display()))?;
    println!(
        "\nbench: wrote {} in {:.0}s",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Iteration counts: `--quick` is a ~1 minute smoke run, the default a full run.
struct Sizes {
    startup_rounds: usize,
    op_rounds: usize,
    fs_ops: u64,
    connect_ops: u64,
    spawn_ops: u64,
    compile_rounds: usize,
    short_workload_rounds: usize,
    storm_rounds: usize,
    deny_opens: u64,
    deny_syscalls: u64,
    /// getppid() calls per idle-cost run.
    idle_ops: u64,
    /// Entries of the large workspace (issue 13: 500,000).
    ws_entries: u64,
}

impl Sizes {
    const QUICK: Sizes = Sizes {
        startup_rounds: 5,
        op_rounds: 2,
        fs_ops: 20_000,
        connect_ops: 300,
        spawn_ops: 50,
        compile_rounds: 1,
        short_workload_rounds: 2,
        storm_rounds: 1,
        deny_opens: 20_000,
        deny_syscalls: 5_000,
        idle_ops: 500_000,
        ws_entries: 20_000,
    };
    const FULL: Sizes = Sizes {
        startup_rounds: 40,
        op_rounds: 7,
        fs_ops: 200_000,
        connect_ops: 2_000,
        spawn_ops: 300,
        compile_rounds: 5,
        short_workload_rounds: 11,
        storm_rounds: 3,
        deny_opens: 200_000,
        deny_syscalls: 100_000,
        idle_ops: 5_000_000,
        ws_entries: 500_000,
    };
}

// ---------------------------------------------------------------------------------------------
// Statistics

/// Median, minimum and maximum of a sample set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stats {
    /// `None` for an empty set; NaN samples are ignored.
    pub(crate) fn of(samples: &[f64]) -> Option<Stats> {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Stats {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            n,
        })
    }

    /// This median over `base`'s median.
    pub(crate) fn ratio(&self, base: &Stats) -> f64 {
        self.median / base.median
    }
}

/// Runs every variant once per round, in order, `rounds` times after one discarded warm-up
/// round; returns the samples per variant.
fn alternate<V>(
    variants: &[V],
    rounds: usize,
    mut run_one: impl FnMut(&V) -> Res<f64>,
) -> Res<Vec<Vec<f64>>> {
    let mut samples = vec![Vec::with_capacity(rounds); variants.len()];
    for round in 0..=rounds {
        for (i, variant) in variants.iter().enumerate() {
            let sample = run_one(variant)?;
            if round > 0 {
                samples[i].push(sample);
            }
        }
    }
    Ok(samples)
}

// ---------------------------------------------------------------------------------------------
// The environment: scratch directory, fixtures, profiles

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Root,
    Nobody,
}

impl Who {
    fn label(self) -> &'static str {
        match self {
            Who::Root => "root",
            Who::Nobody => "nobody",
        }
    }
}

/// Paths of one benchmark run, all under a throwaway directory.
struct Env {
    scratch: PathBuf,
    agentbox: PathBuf,
    /// The ops program (bench/ops.rs) and the file the open/stat loops read: a directory
    /// every bench profile may read and execute from, readable by root and nobody alike.
    shared: PathBuf,
    ops: PathBuf,
    readable: PathBuf,
    /// The temporary HOME of every run (nobody's; root runs only read it).
    home: PathBuf,
    /// A planted fake secret every profile denies: the storm target.
    secret: PathBuf,
    /// Where the audit logs go: outside every workspace.
    logs: PathBuf,
    /// The toolchain the cargo-build workload uses.
    sysroot: PathBuf,
    counter: AtomicU64,
}

impl Env {
    fn prepare(scratch: &Path, agentbox: &Path) -> Res<Env> {
        let dir = |name: &str| scratch.join(name);
        let env = Env {
            scratch: scratch.to_path_buf(),
            agentbox: agentbox.to_path_buf(),
            shared: dir("shared"),
            ops: dir("shared/agentbox-bench-ops"),
            readable: dir("shared/readable.txt"),
            home: dir("home"),
            secret: dir("home/.ssh/id_rsa"),
            logs: dir("logs"),
            sysroot: sysroot()?,
            counter: AtomicU64::new(0),
        };
        let mut dirs = vec![env.shared.clone(), env.home.join(".ssh"), env.logs.clone()];
        for who in [Who::Root, Who::Nobody] {
            dirs.extend([env.workspace(who), env.tmp(who)]);
        }
        for d in &dirs {
            fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        write(&env.readable, "agentbox bench\n")?;
        write(&env.secret, "fake key: the storm's denied file\n")?;

        crate::run(
            Command::new("rustc")
                .args(["-O", "--edition", "2021", "-o"])
                .arg(&env.ops)
                .arg(root().join("bench/ops.rs")),
        )?;

        // Workloads (run as root): a python tree to byte-compile, a source tree to archive,
        // a crate to build.
        let ws = env.workspace(Who::Root);
        copy_tree(Path::new("/usr/lib/python3.11"), &ws.join("py"))?;
        for tree in ["agent-sandbox", "ebpf-probes"] {
            copy_tree(&root().join(tree), &ws.join("src").join(tree))?;
        }
        copy_tree(&root().join("bench/tiny-crate"), &ws.join("tiny"))?;

        // Separate trees per user: agentbox drops every capability, so a root agent cannot
        // create files in a directory nobody owns (and nobody none in root's).
        for d in [
            &env.home,
            &env.workspace(Who::Nobody),
            &env.tmp(Who::Nobody),
            &env.logs,
        ] {
            chown_tree(d, NOBODY)?;
        }
        for d in [&env.scratch, &env.shared] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("{}: {e}", d.display()))?;
        }
        Ok(env)
    }

    /// `${WORKSPACE}` (and cwd) of `who`'s runs.
    fn workspace(&self, who: Who) -> PathBuf {
        self.scratch.join(format!("ws-{}", who.label()))
    }

    /// TMPDIR of `who`'s runs.
    fn tmp(&self, who: Who) -> PathBuf {
        self.scratch.join(format!("tmp-{}", who.label()))
    }

    /// A fresh audit log path (agentbox refuses an existing one).
    fn new_log(&self) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.logs.join(format!("run-{n}.jsonl"))
    }

    /// A command with a clean environment: temporary HOME and TMPDIR, workspace as cwd.
    fn command(&self, who: Who, argv: &[String]) -> Command {
        let mut command = Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .current_dir(self.workspace(who))
            .env_clear()
            .env(
                "PATH",
                "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
            )
            .env("HOME", &self.home)
            .env("TMPDIR", self.tmp(who))
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null());
        if who == Who::Nobody {
            // std drops supplementary groups (setgroups(0)) when root sets a uid.
            command.uid(NOBODY).gid(NOBODY);
        }
        command
    }

    fn ops_argv(&self, args: &[&str]) -> Vec<String> {
        let mut argv = vec![self.ops.display().to_string()];
        argv.extend(args.iter().map(|a| a.to_string()));
        argv
    }
}

/// The bench profiles, written into the scratch directory (outside the workspace).
struct Profiles {
    /// default + read/exec on the ops program's directory.
    ops: PathBuf,
    /// `ops` + the loopback port the connect loop uses.
    net: PathBuf,
    /// `ops` + read/exec on the Rust toolchain, for the cargo-build workload.
    build: PathBuf,
    /// `ops` with `[filesystem] unknown = "ask"`: every read-only open goes through the
    /// supervisor (the cost of `--ask fs`; nothing the loop opens is asked).
    ask_fs: PathBuf,
}

impl Profiles {
    fn write(env: &Env, port: u16) -> Res<Profiles> {
        let dir = env.scratch.join("profiles");
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let base = |extra_read: &[&Path]| {
            let mut trees = vec![format!("{:?}", env.shared.display().to_string())];
            trees.extend(
                extra_read
                    .iter()
                    .map(|p| format!("{:?}", p.display().to_string())),
            );
            format!(
                "extends = \"default\"\ndescription = \"cargo xtask bench\"\n\n[filesystem]\n\
                 read = [{0}]\nexec = [{0}]\n",
                trees.join(", ")
            )
        };
        let ops = dir.join("bench.toml");
        write(&ops, &base(&[]))?;
        let net = dir.join("bench-net.toml");
        write(
            &net,
            &format!("{}\n[network]\nallow = [\"127.0.0.1:{port}\"]\n", base(&[])),
        )?;
        let build = dir.join("bench-build.toml");
        write(&build, &base(&[&env.sysroot]))?;
        let ask_fs = dir.join("bench-ask-fs.toml");
        write(&ask_fs, &format!("{}unknown = \"ask\"\n", base(&[])))?;
        Ok(Profiles {
            ops,
            net,
            build,
            ask_fs,
        })
    }
}

/// A loopback listener that accepts and drops connections, for the connect loop.
struct LoopbackSink {
    port: u16,
}

impl LoopbackSink {
    fn start() -> Res<LoopbackSink> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listen: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        // std listens with a backlog of 128: a fast client outruns the accept thread, the
        // queue overflows, a SYN is dropped and that connect waits a full second for the
        // retransmit. With room for a whole run's connections the loop measures connect only.
        sys::relisten(listener.as_raw_fd(), 4096).map_err(|e| format!("listen: {e}"))?;
        // Lives until xtask exits; accept errors (EMFILE, ...) only slow the client down.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                drop(stream);
            }
        });
        Ok(LoopbackSink { port })
    }
}

// ---------------------------------------------------------------------------------------------
// Variants: how one command is wrapped

#[derive(Debug, Clone)]
enum Wrap {
    Bare,
    Agentbox {
        /// None: the built-in default profile (what `agentbox run -- CMD` uses).
        profile: Option<PathBuf>,
        best_effort: bool,
        /// Remove the pinned eBPF programs before the run.
        cold: bool,
    },
    /// bwrap --ro-bind / / [--dev /dev --bind SCRATCH SCRATCH]
    Bwrap {
        writable: bool,
    },
    Firejail,
    /// bwrap --unshare-user --ro-bind / / (what an unprivileged user runs)
    BwrapUser,
}

#[derive(Debug, Clone)]
struct Variant {
    name: String,
    who: Who,
    wrap: Wrap,
    /// Index of the variant this one is compared with (a bare run as the same user).
    base: usize,
}

impl Variant {
    fn new(name: &str, who: Who, wrap: Wrap, base: usize) -> Variant {
        Variant {
            name: name.into(),
            who,
            wrap,
            base,
        }
    }

    fn is_agentbox(&self) -> bool {
        matches!(self.wrap, Wrap::Agentbox { .. })
    }

    /// The command for `argv` under this variant, and the audit log it writes (agentbox).
    fn command(&self, env: &Env, argv: &[String]) -> Res<(Command, Option<PathBuf>)> {
        let mut full: Vec<String> = Vec::new();
        let mut log = None;
        match &self.wrap {
            Wrap::Bare => {}
            Wrap::Agentbox {
                profile,
                best_effort,
                cold,
            } => {
                if *cold {
                    unpin()?;
                }
                let path = env.new_log();
                full.extend([
                    env.agentbox.display().to_string(),
                    "run".into(),
                    "-q".into(),
                ]);
                if let Some(profile) = profile {
                    full.extend(["--profile".into(), profile.display().to_string()]);
                }
                if *best_effort {
                    full.push("--best-effort".into());
                }
                full.extend(["--log".into(), path.display().to_string(), "--".into()]);
                log = Some(path);
            }
            Wrap::Bwrap { writable } => {
                full.extend(["bwrap", "--ro-bind", "/", "/"].map(String::from));
                if *writable {
                    // bwrap binds with nodev: programs that open /dev/null need a fresh /dev.
                    let s = env.scratch.display().to_string();
                    full.extend(["--dev".into(), "/dev".into(), "--bind".into(), s.clone(), s]);
                }
            }
            Wrap::Firejail => full.extend(["firejail", "--quiet", "--noprofile"].map(String::from)),
            Wrap::BwrapUser => {
                full.extend(["bwrap", "--unshare-user", "--ro-bind", "/", "/"].map(String::from))
            }
        }
        full.extend(argv.iter().cloned());
        Ok((env.command(self.who, &full), log))
    }
}

fn unpin() -> Res<()> {
    match fs::remove_dir_all(PIN_DIR) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot unpin {PIN_DIR}: {e}")),
    }
}

/// What one agentbox configuration enforces here, from a probe run's launch record.
#[derive(Debug, Clone, Default)]
struct Probe {
    available: bool,
    best_effort: bool,
    /// Guarantees not (fully) enforced: "name: reason".
    gaps: Vec<String>,
    error: String,
}

/// Starts `true` under the configuration; when agentbox refuses (exit 125: a guarantee is
/// missing), tries again with --best-effort, and records what holds.
fn probe(env: &Env, who: Who, profile: Option<&Path>) -> Res<Probe> {
    let mut error = String::new();
    for best_effort in [false, true] {
        let variant = Variant::new(
            "probe",
            who,
            Wrap::Agentbox {
                profile: profile.map(Path::to_path_buf),
                best_effort,
                cold: false,
            },
            0,
        );
        let (mut command, log) = variant.command(env, &["true".to_string()])?;
        let output = command
            .output()
            .map_err(|e| format!("starting agentbox: {e}"))?;
        let log = log.expect("agentbox variants have a log");
        if output.status.success() {
            let gaps = launch_gaps(&log);
            let _ = fs::remove_file(&log);
            return Ok(Probe {
                available: true,
                best_effort,
                gaps,
                error: String::new(),
            });
        }
        error = String::from_utf8_lossy(&output.stderr).trim().to_string();
        let _ = fs::remove_file(&log);
    }
    Ok(Probe {
        error,
        ..Probe::default()
    })
}

fn launch_gaps(log: &Path) -> Vec<String> {
    let text = fs::read_to_string(log).unwrap_or_default();
    let Some(launch) = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["type"] == "launch")
    else {
        return vec!["(no launch record)".into()];
    };
    launch["guarantees"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| g["enforced"] != true)
        .map(|g| {
            format!(
                "{}: {}",
                g["guarantee"].as_str().unwrap_or("?"),
                g["reason"].as_str().unwrap_or("not enforced")
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Measuring one run

/// One finished run.
#[derive(Debug, Default)]
struct Sample {
    wall: Duration,
    stdout: String,
    /// The process's own user+system CPU (not its children's), read while it was a zombie.
    self_cpu: Option<Duration>,
    /// Peak of VmHWM sampled every 5 ms while it ran (its own memory only).
    vm_hwm_kb: Option<u64>,
    /// wait4's ru_maxrss: the larger of its own peak and its reaped descendants' peaks.
    maxrss_kb: u64,
}

/// Runs `command` to completion; fails unless it exits 0. `detail` adds the CPU and memory
/// readings (a sampler thread, so not used where only wall time matters).
fn measure(mut command: Command, scratch: &Path, detail: bool) -> Res<Sample> {
    let out_path = scratch.join("stdout.txt");
    let err_path = scratch.join("stderr.txt");
    // Files, not pipes: a chatty child can never block on a full pipe while we wait.
    let stdout = fs::File::create(&out_path).map_err(|e| format!("{e}"))?;
    let stderr = fs::File::create(&err_path).map_err(|e| format!("{e}"))?;
    command.stdout(stdout).stderr(stderr);
    let shown = crate::show(&command);
    let start = Instant::now();
    let child = command
        .spawn()
        .map_err(|e| format!("cannot start `{shown}`: {e}"))?;
    let pid = child.id() as i32;
    let mut sample = Sample::default();
    let sampler = detail.then(|| HwmSampler::start(pid));
    if detail {
        sys::wait_exited_nowait(pid).map_err(|e| format!("waitid({pid}): {e}"))?;
        sample.wall = start.elapsed();
        sample.self_cpu = own_cpu(pid);
        sample.vm_hwm_kb = sampler.map(HwmSampler::stop);
    }
    let (status, maxrss_kb) = sys::reap(pid).map_err(|e| format!("wait4({pid}): {e}"))?;
    if !detail {
        sample.wall = start.elapsed();
    }
    // Reaped by wait4 above; std's Child does not wait on drop.
    drop(child);
    sample.maxrss_kb = maxrss_kb;
    sample.stdout = fs::read_to_string(&out_path).unwrap_or_default();
    if status != 0 {
        let stderr = fs::read_to_string(&err_path).unwrap_or_default();
        return Err(format!(
            "`{shown}` failed ({}):\n{}",
            sys::describe_status(status),
            tail(&stderr, 2000)
        ));
    }
    Ok(sample)
}

/// utime + stime of a zombie (its own, children excluded) from /proc/PID/stat.
fn own_cpu(pid: i32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised comm: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let hz = sys::clock_ticks_per_second()?;
    Some(Duration::from_secs_f64(ticks as f64 / hz as f64))
}

/// Samples /proc/PID/status VmHWM (the kernel's own high-water mark) until stopped.
struct HwmSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl HwmSampler {
    fn start(pid: i32) -> HwmSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (Arc::clone(&stop), Arc::clone(&peak));
        let thread = std::thread::spawn(move || {
            let path = format!("/proc/{pid}/status");
            while !s.load(Ordering::Relaxed) {
                if let Some(kb) = fs::read_to_string(&path).ok().and_then(|t| vm_hwm_kb(&t)) {
                    p.fetch_max(kb, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        HwmSampler { stop, peak, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed)
    }
}

fn vm_hwm_kb(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `ns_per_op=<f64> ops=<n> failed=<n>` from the ops program.
#[derive(Debug, Clone, Copy, PartialEq)]
struct OpsReport {
    ns_per_op: f64,
    ops: u64,
    failed: u64,
}

fn parse_ops(stdout: &str) -> Res<OpsReport> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("ns_per_op="))
        .ok_or_else(|| format!("the ops program printed no result: {stdout:?}"))?;
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .ok_or_else(|| format!("no `{name}` in {line:?}"))
    };
    let bad = |e: std::num::ParseFloatError| e.to_string();
    Ok(OpsReport {
        ns_per_op: field("ns_per_op")?.parse().map_err(bad)?,
        ops: field("ops")?.parse().map_err(|e| format!("{e}"))?,
        failed: field("failed")?.parse().map_err(|e| format!("{e}"))?,
    })
}

/// Runs the ops program once and checks that every operation behaved as expected.
fn run_ops(env: &Env, variant: &Variant, args: &[&str]) -> Res<OpsReport> {
    let (command, log) = variant.command(env, &env.ops_argv(args))?;
    let sample = measure(command, &env.scratch, false)?;
    if let Some(log) = log {
        let _ = fs::remove_file(log);
    }
    let report = parse_ops(&sample.stdout)?;
    if report.failed > 0 {
        return Err(format!(
            "{}: `ops {}`: {} of {} operations failed",
            variant.name,
            args.join(" "),
            report.failed,
            report.ops
        ));
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// The benchmarks

fn startup(env: &Env, sizes: &Sizes, doc: &mut Doc) -> Res<()> {
    let user = probe(env, Who::Nobody, None)?;
    let root_probe = probe(env, Who::Root, None)?;
    let pinned_after_root = Path::new(PIN_DIR).exists();
    doc.layers
        .push(("agentbox as nobody, default profile".into(), user.clone()));
    doc.layers.push((
        "agentbox as root, default profile".into(),
        root_probe.clone(),
    ));
    doc.pinned = pinned_after_root;

    let agentbox = |cold| Wrap::Agentbox {
        profile: None,
        best_effort: false,
        cold,
    };
    let mut variants = vec![
        Variant::new("bare `true` (root)", Who::Root, Wrap::Bare, 0),
        Variant::new("bare `true` (nobody)", Who::Nobody, Wrap::Bare, 1),
    ];
    if user.available && !user.best_effort {
        variants.push(Variant::new(
            "agentbox (nobody)",
            Who::Nobody,
            agentbox(false),
            1,
        ));
    }
    let root_ok = root_probe.available && !root_probe.best_effort;
    if root_ok {
        variants.push(Variant::new(
            "agentbox (root, warm: pinned)",
            Who::Root,
            agentbox(false),
            0,
        ));
    }
    variants.push(Variant::new(
        "bwrap --ro-bind / / true",
        Who::Root,
        Wrap::Bwrap { writable: false },
        0,
    ));
    variants.push(Variant::new(
        "firejail --quiet --noprofile true",
        Who::Root,
        Wrap::Firejail,
        0,
    ));
    variants.push(Variant::new(
        "bwrap --unshare-user --ro-bind / / true (nobody)",
        Who::Nobody,
        Wrap::BwrapUser,
        1,
    ));
    let argv = ["true".to_string()];
    let run_once = |v: &Variant| -> Res<f64> {
        let (command, log) = v.command(env, &argv)?;
        let sample = measure(command, &env.scratch, false)?;
        if let Some(log) = log {
            let _ = fs::remove_file(log);
        }
        Ok(sample.wall.as_secs_f64() * 1e3)
    };
    let samples = alternate(&variants, sizes.startup_rounds, run_once)?;
    let table = Table::build("Start-up: `CMD -- true`", Unit::Ms, &variants, &samples);
    table.print();
    let mut cold_table = None;

    // Cold runs alternate with bwrap alone: each one unpins and frees the last one's
    // programs and maps, which the kernel then tears down in the background for tens of
    // milliseconds, and a warm run in the same rounds measured that clean-up too (27 ms
    // against 15 ms warm after warm here).
    if root_ok {
        let cold = vec![
            Variant::new(
                "agentbox (root, cold: unpinned)",
                Who::Root,
                agentbox(true),
                0,
            ),
            Variant::new(
                "bwrap --ro-bind / / true",
                Who::Root,
                Wrap::Bwrap { writable: false },
                0,
            ),
        ];
        let rounds = sizes.startup_rounds.div_ceil(2);
        let samples = alternate(&cold, rounds, run_once)?;
        cold_table = Some(Table::build(
            "Start-up, root, nothing pinned: `CMD -- true`",
            Unit::Ms,
            &cold,
            &samples,
        ));
    }
    if let Some(t) = &cold_table {
        t.print();
    }

    // Targets (issue 13): root warm at most 2x bwrap, cold at most 4x; unprivileged at most
    // 1.2x `bwrap --unshare-user` as the same user.
    // Each agentbox row is compared with the bwrap row of its own table.
    let find = |name: &str, cold: bool| {
        let t = if cold {
            cold_table.as_ref()
        } else {
            Some(&table)
        };
        t?.rows.iter().find(|r| r.name.starts_with(name))
    };
    let goals = [
        (
            "agentbox (root, warm",
            "bwrap --ro-bind",
            2.0,
            "root warm start-up at most 2x bwrap",
            &root_probe.error,
        ),
        (
            "agentbox (root, cold",
            "bwrap --ro-bind",
            4.0,
            "root cold start-up at most 4x bwrap",
            &root_probe.error,
        ),
        (
            "agentbox (nobody)",
            "bwrap --unshare-user",
            1.2,
            "unprivileged start-up at most 1.2x bwrap --unshare-user",
            &user.error,
        ),
    ];
    for (ours, theirs, limit, goal, why) in goals {
        let cold = ours.contains("cold");
        match (find(ours, cold), find(theirs, cold)) {
            (Some(a), Some(b)) => {
                let ratio = a.stats.ratio(&b.stats);
                let met = ratio <= limit;
                doc.targets.push(Target {
                    goal: goal.into(),
                    measured: format!(
                        "{:.2} ms vs {:.2} ms ({ratio:.2}x)",
                        a.stats.median, b.stats.median
                    ),
                    met,
                    gap: (!met).then(|| {
                        format!(
                            "{:.2} ms over the budget",
                            a.stats.median - limit * b.stats.median
                        )
                    }),
                });
            }
            _ => doc.targets.push(Target::unmeasured(goal, why)),
        }
    }
    doc.tables.push(table);
    doc.tables.extend(cold_table);
    Ok(())
}

/// Any workspace size (issue 13): the default profile's start-up in an empty workspace and in
/// one of `ws_entries` entries (no BPF LSM on the host: the deny/protect search is what could
/// grow with it), root and unprivileged.
fn workspace_size(env: &Env, sizes: &Sizes, doc: &mut Doc) -> Res<()> {
    let big = env.scratch.join("ws-big");
    let per_dir = 1000;
    let dirs = sizes.ws_entries / (per_dir + 1);
    let started = Instant::now();
    for d in 0..dirs {
        let dir = big.join(format!("d{d:04}"));
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for f in 0..per_dir {
            let file = dir.join(format!("f{f:04}.txt"));
            fs::File::create(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        }
    }
    let entries = dirs * (per_dir + 1);
    println!(
        "bench: {entries} entries under {} in {:.0}s",
        big.display(),
        started.elapsed().as_secs_f64()
    );
    let agentbox = Wrap::Agentbox {
        profile: None,
        best_effort: false,
        cold: false,
    };
    let big_name = |who: &str| format!("agentbox ({who}), {entries} entries");
    let variants = vec![
        Variant::new(
            "agentbox (root), empty workspace",
            Who::Root,
            agentbox.clone(),
            0,
        ),
        Variant::new(&big_name("root"), Who::Root, agentbox.clone(), 0),
        Variant::new(
            "agentbox (nobody), empty workspace",
            Who::Nobody,
            agentbox.clone(),
            2,
        ),
        Variant::new(&big_name("nobody"), Who::Nobody, agentbox, 2),
    ];
    let argv = ["true".to_string()];
    let samples = alternate(&variants, sizes.startup_rounds.min(11), |v| {
        let (mut command, log) = v.command(env, &argv)?;
        if v.name.contains("entries") {
            command.current_dir(&big);
        }
        let sample = measure(command, &env.scratch, false);
        if let Some(log) = log {
            let _ = fs::remove_file(log);
        }
        // measure() fails unless agentbox exits 0: a refusal for size ends the bench.
        let sample = sample.map_err(|e| format!("{}: {e}", v.name))?;
        Ok(sample.wall.as_secs_f64() * 1e3)
    })?;
    let table = Table::build(
        "Start-up by workspace size: `agentbox run -- true`",
        Unit::Ms,
        &variants,
        &samples,
    );
    table.print();
    for row in table.rows.iter().filter(|r| r.name.contains("entries")) {
        doc.targets.push(Target::ratio(
            &format!(
                "start-up in a workspace of {entries} entries within 1.2x of an empty one, {}",
                row.name
            ),
            row.ratio,
            1.2,
        ));
    }
    doc.tables.push(table);
    let _ = fs::remove_dir_all(&big);
    Ok(())
}

/// No cost when idle (issue 13): what a process outside any sandbox pays per syscall with no
/// agentbox program loaded, after a run ended, and while a sandbox runs.
fn idle_cost(env: &Env, sizes: &Sizes, doc: &mut Doc) -> Res<()> {
    let n = sizes.idle_ops.to_string();
    let states = vec![
        Variant::new("never run (nothing pinned)", Who::Root, Wrap::Bare, 0),
        Variant::new("after a run ended", Who::Root, Wrap::Bare, 0),
        Variant::new("while a sandbox runs", Who::Root, Wrap::Bare, 0),
    ];
    let bare = Variant::new("bare", Who::Root, Wrap::Bare, 0);
    let run = |argv: &[&str]| {
        Variant::new(
            "run",
            Who::Root,
            Wrap::Agentbox {
                profile: None,
                best_effort: false,
                cold: false,
            },
            0,
        )
        .command(env, &argv.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    };
    let after_a_run = || -> Res<()> {
        let (mut command, log) = run(&["true"])?;
        let status = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("agentbox: {e}"))?;
        if let Some(log) = log {
            let _ = fs::remove_file(log);
        }
        if !status.success() {
            return Err(format!("agentbox run -- true: {status}"));
        }
        Ok(())
    };
    let samples = alternate(&states, sizes.op_rounds, |state| {
        let mut background = None;
        if state.name.starts_with("never") {
            unpin()?;
        } else if state.name.starts_with("after") {
            after_a_run()?;
        } else {
            let (mut command, log) = run(&["sleep", "600"])?;
            let child = command
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("agentbox: {e}"))?;
            let log = log.expect("agentbox variants have a log");
            let deadline = Instant::now() + Duration::from_secs(30);
            while !fs::read_to_string(&log).is_ok_and(|t| t.contains("\"launch\"")) {
                if Instant::now() > deadline {
                    return Err("the background sandbox did not start in 30 s".into());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            background = Some((child, log));
        }
        let report = run_ops(env, &bare, &["getppid", &n]);
        if let Some((mut child, log)) = background {
            // SIGTERM: agentbox ends the sandbox and, as the last supervisor, detaches.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
            let _ = fs::remove_file(log);
        }
        Ok(report?.ns_per_op)
    })?;
    let table = Table::build(
        &format!("Idle cost: getppid() in a process outside any sandbox, {n} per run"),
        Unit::Ns,
        &states,
        &samples,
    );
    table.print();
    for (name, limit, goal) in [
        (
            "after",
            1.02,
            "no cost once the last sandbox ended: getppid() after a run within 1.02x",
        ),
        (
            "while",
            1.05,
            "an unsandboxed process's syscalls while a sandbox runs within 1.05x",
        ),
    ] {
        if let Some(row) = table.rows.iter().find(|r| r.name.starts_with(name)) {
            doc.targets.push(Target::ratio(goal, row.ratio, limit));
        }
    }
    doc.tables.push(table);

    // The lifecycle observers stay attached after a run (runtime.rs, DETACHED_WHEN_IDLE):
    // what they cost a process outside any sandbox, per fork + exec + exit.
    let spawns = sizes.spawn_ops.to_string();
    let states = &states[..2];
    let samples = alternate(states, sizes.op_rounds, |state| {
        if state.name.starts_with("never") {
            unpin()?;
        } else {
            after_a_run()?;
        }
        Ok(run_ops(env, &bare, &["spawn", &spawns, "/bin/true"])?.ns_per_op)
    })?;
    let table = Table::build(
        &format!(
            "Idle cost: fork + exec + wait `/bin/true` in a process outside any sandbox, \
             {spawns} per run"
        ),
        Unit::Ns,
        states,
        &samples,
    );
    table.print();
    if let Some(row) = table.rows.iter().find(|r| r.name.starts_with("after")) {
        doc.targets.push(Target::ratio(
            "no cost once the last sandbox ended: fork + exec after a run within 1.02x \
             (the lifecycle observers stay attached)",
            row.ratio,
            1.02,
        ));
    }
    doc.tables.push(table);
    Ok(())
}

fn operations(env: &Env, profiles: &Profiles, sizes: &Sizes, port: u16, doc: &mut Doc) -> Res<()> {
    let readable = env.readable.display().to_string();
    let fs_n = sizes.fs_ops.to_string();
    let connect_n = sizes.connect_ops.to_string();
    let spawn_n = sizes.spawn_ops.to_string();
    let port = port.to_string();
    // The last value: the target ratio, if the row has one.
    let loops: [(&str, Vec<&str>, &Path, Option<f64>); 5] = [
        (
            "open + close",
            vec!["open", &fs_n, &readable],
            &profiles.ops,
            Some(1.10),
        ),
        (
            "stat",
            vec!["stat", &fs_n, &readable],
            &profiles.ops,
            Some(1.10),
        ),
        (
            "TCP connect + close (127.0.0.1)",
            vec!["connect", &connect_n, &port],
            &profiles.net,
            Some(1.10),
        ),
        (
            "fork + exec + wait `/bin/true`",
            vec!["spawn", &spawn_n, "/bin/true"],
            &profiles.ops,
            Some(1.10),
        ),
        // What `--ask fs` costs (docs/approvals.md): each read-only open is a round trip.
        (
            "open + close under `--ask fs`",
            vec!["open", &fs_n, &readable],
            &profiles.ask_fs,
            None,
        ),
    ];
    for (title, args, profile, target) in loops {
        let mut variants = vec![Variant::new("bare (root)", Who::Root, Wrap::Bare, 0)];
        for who in [Who::Root, Who::Nobody] {
            let p = probe(env, who, Some(profile))?;
            let name = format!(
                "agentbox ({}{})",
                who.label(),
                if p.best_effort { ", --best-effort" } else { "" }
            );
            if p.best_effort {
                doc.notes.push(format!(
                    "{title}: {name} runs with --best-effort; not enforced: {}",
                    gap_names(&p.gaps)
                ));
            }
            if p.available {
                variants.push(Variant::new(
                    &name,
                    who,
                    Wrap::Agentbox {
                        profile: Some(profile.to_path_buf()),
                        best_effort: p.best_effort,
                        cold: false,
                    },
                    0,
                ));
            } else {
                doc.notes.push(format!(
                    "{title}: agentbox as {} refused this profile: {}",
                    who.label(),
                    p.error
                ));
            }
        }
        variants.push(Variant::new(
            "bwrap (root)",
            Who::Root,
            Wrap::Bwrap { writable: true },
            0,
        ));
        let samples = alternate(&variants, sizes.op_rounds, |v| {
            Ok(run_ops(env, v, &args)?.ns_per_op)
        })?;
        let table = Table::build(
            &format!("{title}, {} per run", args[1]),
            Unit::Ns,
            &variants,
            &samples,
        );
        table.print();
        for row in table.rows.iter().filter(|r| r.agentbox) {
            if let Some(limit) = target {
                doc.targets.push(Target::ratio(
                    &format!("{title} loop within {limit:.2}x of bare, {}", row.name),
                    row.ratio,
                    limit,
                ));
            }
        }
        doc.tables.push(table);
    }
    Ok(())
}

fn workloads(env: &Env, profiles: &Profiles, sizes: &Sizes, doc: &mut Doc) -> Res<()> {
    let p = probe(env, Who::Root, Some(&profiles.build))?;
    if !p.available {
        return Err(format!(
            "agentbox as root refuses the build profile: {}",
            p.error
        ));
    }
    if p.best_effort {
        doc.notes.push(format!(
            "real workloads: agentbox runs with --best-effort; not enforced: {}",
            gap_names(&p.gaps)
        ));
    }
    let variants = vec![
        Variant::new("bare (root)", Who::Root, Wrap::Bare, 0),
        Variant::new(
            "agentbox (root)",
            Who::Root,
            Wrap::Agentbox {
                profile: Some(profiles.build.clone()),
                best_effort: p.best_effort,
                cold: false,
            },
            0,
        ),
        Variant::new("bwrap (root)", Who::Root, Wrap::Bwrap { writable: true }, 0),
    ];
    let s = |v: &str| v.to_string();
    let cargo = env.sysroot.join("bin/cargo").display().to_string();
    let ws = env.workspace(Who::Root);
    let tiny_target = ws.join("tiny-target");
    let jobs: [(&str, Vec<String>, usize); 3] = [
        (
            "python3 -m compileall -f (copy of /usr/lib/python3.11)",
            vec![
                s("/usr/bin/python3"),
                s("-m"),
                s("compileall"),
                s("-q"),
                s("-f"),
                s("py"),
            ],
            sizes.compile_rounds,
        ),
        (
            "tar | gzip (agent-sandbox/ + ebpf-probes/)",
            vec![
                s("/bin/sh"),
                s("-c"),
                s("tar cf - src | gzip -6 > src.tar.gz"),
            ],
            sizes.short_workload_rounds,
        ),
        (
            "cargo build --offline (a dependency-free crate, clean target)",
            vec![
                cargo,
                s("build"),
                s("--offline"),
                s("-q"),
                s("--manifest-path"),
                s("tiny/Cargo.toml"),
            ],
            sizes.short_workload_rounds,
        ),
    ];
    for (title, argv, rounds) in jobs {
        let samples = alternate(&variants, rounds, |v| {
            // Outside the timing: every cargo build starts from an empty target directory.
            let _ = fs::remove_dir_all(&tiny_target);
            let (mut command, log) = v.command(env, &argv)?;
            command
                .env("CARGO_HOME", ws.join("cargo-home"))
                .env("CARGO_TARGET_DIR", &tiny_target)
                .env("RUSTC", env.sysroot.join("bin/rustc"));
            let sample = measure(command, &env.scratch, false)?;
            if let Some(log) = log {
                let _ = fs::remove_file(log);
            }
            Ok(sample.wall.as_secs_f64())
        })?;
        let table = Table::build(title, Unit::S, &variants, &samples);
        table.print();
        // Issue 13's budget for real workloads.
        for row in table.rows.iter().filter(|r| r.agentbox) {
            doc.targets.push(Target::ratio(
                &format!("real workload within 1.03x of bare: {title}"),
                row.ratio,
                1.03,
            ));
        }
        doc.tables.push(table);
    }
    Ok(())
}

/// One denial storm's outcome, read back from the audit log.
#[derive(Debug, Default, Clone)]
struct StormResult {
    attempts: u64,
    delivered: u64,
    lost: u64,
    /// Denials per second between the first and the last denial's timestamps.
    rate: Option<f64>,
    agent_ns_per_op: f64,
    wall: Duration,
    self_cpu: Option<Duration>,
    vm_hwm_kb: Option<u64>,
    maxrss_kb: u64,
}

fn events(env: &Env, profiles: &Profiles, sizes: &Sizes, doc: &mut Doc) -> Res<()> {
    let secret = env.secret.display().to_string();
    let opens = sizes.deny_opens.to_string();
    let syscalls = sizes.deny_syscalls.to_string();
    let storms: [(&str, Who, Vec<&str>); 3] = [
        (
            "denied open() of a planted ~/.ssh/id_rsa",
            Who::Root,
            vec!["deny-open", &opens, &secret],
        ),
        (
            "denied open() of a planted ~/.ssh/id_rsa",
            Who::Nobody,
            vec!["deny-open", &opens, &secret],
        ),
        (
            "denied syscall (keyctl: seccomp user notification)",
            Who::Root,
            vec!["deny-syscall", &syscalls],
        ),
    ];
    for (title, who, args) in storms {
        let p = probe(env, who, Some(&profiles.ops))?;
        if !p.available || p.best_effort {
            doc.notes.push(format!(
                "storm `{title}` as {}: skipped, agentbox refused the profile: {}",
                who.label(),
                p.error
            ));
            continue;
        }
        let variant = Variant::new(
            "agentbox",
            who,
            Wrap::Agentbox {
                profile: Some(profiles.ops.clone()),
                best_effort: false,
                cold: false,
            },
            0,
        );
        let mut results = Vec::new();
        for _ in 0..sizes.storm_rounds {
            let (command, log) = variant.command(env, &env.ops_argv(&args))?;
            let sample = measure(command, &env.scratch, true)?;
            let log = log.expect("agentbox variants have a log");
            let report = parse_ops(&sample.stdout)?;
            if report.failed > 0 {
                return Err(format!(
                    "storm `{title}`: {} operations were not denied",
                    report.failed
                ));
            }
            let mut result = read_storm_log(&log, args[0])?;
            let _ = fs::remove_file(&log);
            result.attempts = report.ops;
            result.agent_ns_per_op = report.ns_per_op;
            result.wall = sample.wall;
            result.self_cpu = sample.self_cpu;
            result.vm_hwm_kb = sample.vm_hwm_kb;
            result.maxrss_kb = sample.maxrss_kb;
            println!(
                "bench: storm {title} ({}): {} attempts, {} delivered, {} lost, {}",
                who.label(),
                result.attempts,
                result.delivered,
                result.lost,
                result
                    .rate
                    .map_or("no rate".into(), |r| format!("{r:.0} events/s"))
            );
            results.push(result);
        }
        doc.storms
            .push((format!("{title} (as {})", who.label()), results));
    }

    // Memory of a plain start-up, for scale.
    for who in [Who::Root, Who::Nobody] {
        let variant = Variant::new(
            "agentbox",
            who,
            Wrap::Agentbox {
                profile: None,
                best_effort: false,
                cold: false,
            },
            0,
        );
        let (command, log) = variant.command(env, &["true".to_string()])?;
        if let Ok(sample) = measure(command, &env.scratch, true) {
            doc.startup_memory
                .push((format!("`agentbox run -- true` as {}", who.label()), sample));
        }
        if let Some(log) = log {
            let _ = fs::remove_file(log);
        }
    }

    let best = doc
        .storms
        .iter()
        .flat_map(|(name, rs)| rs.iter().map(move |r| (name, r)))
        .filter(|(_, r)| r.delivered > 0)
        .filter_map(|(name, r)| Some((name, r.rate?, r)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let goal = "at least one million events per second drained, with exact loss counts";
    doc.targets.push(match best {
        Some((name, rate, r)) => {
            let exact = r.delivered + r.lost == r.attempts;
            let capacity = r
                .self_cpu
                .filter(|c| !c.is_zero())
                .map_or(String::new(), |c| {
                    format!(
                        "; supervisor CPU allows ~{:.0} events/s",
                        r.delivered as f64 / c.as_secs_f64()
                    )
                });
            Target {
                goal: goal.into(),
                measured: format!(
                    "best {rate:.0} events/s delivered ({name}){capacity}; delivered + lost {} \
                     attempts",
                    if exact { "==" } else { "!=" }
                ),
                met: rate >= 1e6 && exact,
                gap: (rate < 1e6).then(|| format!("{:.1}x short", 1e6 / rate)),
            }
        }
        None => Target::unmeasured(goal, "no storm delivered any event"),
    });
    Ok(())
}

/// Counts the storm's denials (the denied file, or keyctl) and the Loss records.
fn read_storm_log(log: &Path, mode: &str) -> Res<StormResult> {
    let text = fs::read_to_string(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut result = StormResult::default();
    let (mut first, mut last) = (None, None);
    for line in text.lines() {
        let record: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{}: bad line: {e}", log.display()))?;
        match record["type"].as_str() {
            Some("denial") => {
                let object = &record["object"];
                let ours = match mode {
                    "deny-open" => object["path"]
                        .as_str()
                        .is_some_and(|p| p.ends_with(".ssh/id_rsa")),
                    _ => object["name"] == "keyctl",
                };
                if ours {
                    result.delivered += 1;
                    let ts = record["ts"].as_str().and_then(parse_rfc3339_secs);
                    first = first.or(ts);
                    last = ts.or(last);
                }
            }
            Some("loss") => result.lost += record["count"].as_u64().unwrap_or(0),
            _ => {}
        }
    }
    if let (Some(a), Some(b)) = (first, last) {
        if b > a && result.delivered > 1 {
            result.rate = Some((result.delivered - 1) as f64 / (b - a));
        }
    }
    Ok(result)
}

/// Seconds since the Unix epoch of `2026-11-24T05:29:09.979900188Z` (UTC, `Z` only).
fn parse_rfc3339_secs(ts: &str) -> Option<f64> {
    let ts = ts.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let sec: f64 = t.next()?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + min * 60) as f64 + sec)
}

// ---------------------------------------------------------------------------------------------
// Tables and the document

#[derive(Debug, Clone, Copy)]
enum Unit {
    Ms,
    Ns,
    S,
}

impl Unit {
    fn format(self, v: f64) -> String {
        match self {
            Unit::Ms => format!("{v:.2} ms"),
            Unit::S => format!("{v:.3} s"),
            Unit::Ns if v >= 10_000.0 => format!("{:.1} µs", v / 1e3),
            Unit::Ns => format!("{v:.0} ns"),
        }
    }
}

struct Row {
    name: String,
    agentbox: bool,
    stats: Stats,
    base_name: String,
    ratio: f64,
}

struct Table {
    title: String,
    unit: Unit,
    rows: Vec<Row>,
}

impl Table {
    fn build(title: &str, unit: Unit, variants: &[Variant], samples: &[Vec<f64>]) -> Table {
        let stats: Vec<Option<Stats>> = samples.iter().map(|s| Stats::of(s)).collect();
        let rows = variants
            .iter()
            .zip(&stats)
            .filter_map(|(v, s)| {
                let s = (*s)?;
                let base = stats[v.base]?;
                Some(Row {
                    name: v.name.clone(),
                    agentbox: v.is_agentbox(),
                    stats: s,
                    base_name: variants[v.base].name.clone(),
                    ratio: s.ratio(&base),
                })
            })
            .collect();
        Table {
            title: title.into(),
            unit,
            rows,
        }
    }

    fn markdown(&self) -> String {
        let mut s = format!(
            "### {}\n\n| variant | median | min – max | vs bare | runs |\n| --- | ---: | ---: | ---: | ---: |\n",
            self.title
        );
        for r in &self.rows {
            let vs = if r.name == r.base_name {
                "1.00x (baseline)".to_string()
            } else if matches!(self.unit, Unit::Ms) {
                format!(
                    "{:.2}x ({:+.2} ms)",
                    r.ratio,
                    r.stats.median * (1.0 - 1.0 / r.ratio)
                )
            } else {
                format!("{:.2}x", r.ratio)
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} – {} | {vs} | {} |",
                r.name,
                self.unit.format(r.stats.median),
                self.unit.format(r.stats.min),
                self.unit.format(r.stats.max),
                r.stats.n
            );
        }
        s
    }

    fn print(&self) {
        println!("{}", self.markdown());
    }
}

struct Target {
    goal: String,
    measured: String,
    met: bool,
    /// How far off, when missed.
    gap: Option<String>,
}

impl Target {
    fn ratio(goal: &str, ratio: f64, limit: f64) -> Target {
        let met = ratio <= limit;
        Target {
            goal: goal.into(),
            measured: format!("{ratio:.3}x"),
            met,
            gap: (!met).then(|| {
                format!(
                    "{:+.1}% over the {limit:.2}x budget",
                    (ratio / limit - 1.0) * 100.0
                )
            }),
        }
    }

    fn unmeasured(goal: &str, why: &str) -> Target {
        Target {
            goal: goal.into(),
            measured: format!("not measured: {}", one_line(why)),
            met: false,
            gap: None,
        }
    }
}

#[derive(Default)]
struct Doc {
    tables: Vec<Table>,
    targets: Vec<Target>,
    notes: Vec<String>,
    layers: Vec<(String, Probe)>,
    pinned: bool,
    storms: Vec<(String, Vec<StormResult>)>,
    startup_memory: Vec<(String, Sample)>,
}

struct Machine {
    kernel: String,
    cpu: String,
    cores: usize,
    memory: String,
    commit: String,
    date: String,
    load_before: String,
    load_after: String,
    quick: bool,
    duration: Duration,
    versions: Vec<(String, String)>,
}

impl Machine {
    fn collect(agentbox: &Path, load_before: String, quick: bool, started: Instant) -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("unknown".into(), |(_, v)| v.trim().to_string());
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or("unknown".into(), |kb| {
                format!("{:.1} GiB", kb / 1024.0 / 1024.0)
            });
        let mut commit = capture(
            Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .current_dir(root()),
        );
        let dirty = capture(
            Command::new("git")
                .args(["status", "--porcelain", "--untracked-files=no"])
                .current_dir(root()),
        );
        if !dirty.is_empty() {
            commit.push_str(" + uncommitted changes");
        }
        let first_line = |c: &mut Command| capture(c).lines().next().unwrap_or("").to_string();
        let versions = vec![
            (
                "agentbox".into(),
                first_line(Command::new(agentbox).arg("--version")),
            ),
            (
                "bwrap".into(),
                first_line(Command::new("bwrap").arg("--version")),
            ),
            (
                "firejail".into(),
                first_line(Command::new("firejail").arg("--version")),
            ),
            (
                "python3".into(),
                first_line(Command::new("/usr/bin/python3").arg("--version")),
            ),
            (
                "rustc".into(),
                first_line(Command::new("rustc").arg("--version")),
            ),
        ];
        Machine {
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or("unknown".into(), |s| s.trim().to_string()),
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory,
            commit,
            date: capture(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])),
            load_before,
            load_after: loadavg(),
            quick,
            duration: started.elapsed(),
            versions,
        }
    }
}

impl Doc {
    fn render(&self, m: &Machine) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Benchmarks\n\n<!-- Generated by `cargo xtask bench{}`; do not edit by hand. -->\n",
            if m.quick { " --quick" } else { "" }
        );
        if m.quick {
            s.push_str(
                "**Smoke run (`--quick`): few iterations, numbers are indicative only.**\n\n",
            );
        }
        s.push_str(
            "agentbox side by side with bare exec, bubblewrap and firejail. Within each table the \
             variants ran alternately (A B C A B C ...) in one run, after one discarded warm-up \
             round; cells are medians with min – max, ratios are medians over the bare median \
             (as the same user). agentbox is a release build, run with `-q` (no terminal summary; \
             the audit log is still written) in a temporary workspace with a temporary HOME.\n\n",
        );
        let _ = writeln!(s, "## Machine\n\n| | |\n| --- | --- |");
        let _ = writeln!(s, "| date | {} |", m.date);
        let _ = writeln!(s, "| kernel (`uname -r`) | {} |", m.kernel);
        let _ = writeln!(s, "| CPU | {} |", m.cpu);
        let _ = writeln!(s, "| cores (nproc) | {} |", m.cores);
        let _ = writeln!(s, "| memory | {} |", m.memory);
        let _ = writeln!(s, "| agentbox commit | {} |", m.commit);
        for (tool, version) in &m.versions {
            let _ = writeln!(s, "| {tool} | {version} |");
        }
        let _ = writeln!(
            s,
            "| load average (1, 5, 15 min) | before: {}; after: {} |",
            m.load_before, m.load_after
        );
        let _ = writeln!(s, "| bench duration | {:.0} s |", m.duration.as_secs_f64());
        let idle = m
            .load_before
            .split_whitespace()
            .next()
            .and_then(|l| l.parse::<f64>().ok())
            .is_some_and(|l| l < 0.3);
        let _ = writeln!(
            s,
            "\nMachine idle at start: **{}** (1-minute load average {} 0.3). {}\n",
            if idle { "yes" } else { "no" },
            if idle { "<" } else { ">=" },
            if idle {
                ""
            } else {
                "Other work competed for the CPUs: treat absolute numbers and small ratios with care."
            }
        );

        let _ = writeln!(
            s,
            "## Targets\n\n| target | measured | verdict |\n| --- | --- | --- |"
        );
        for t in &self.targets {
            let verdict = match (&t.gap, t.met) {
                (_, true) => "met".to_string(),
                (Some(gap), false) => format!("**missed**: {gap}"),
                (None, false) => "**not met**".to_string(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {verdict} |",
                cell(&t.goal),
                cell(&t.measured)
            );
        }
        s.push_str(WHY);

        let _ = writeln!(s, "\n## Layers in effect\n");
        for (name, probe) in &self.layers {
            if !probe.available {
                let _ = writeln!(s, "- {name}: **refused**: {}", one_line(&probe.error));
            } else if probe.gaps.is_empty() {
                let _ = writeln!(s, "- {name}: every guarantee enforced");
            } else {
                let _ = writeln!(s, "- {name}: not (fully) enforced:");
                for gap in &probe.gaps {
                    let _ = writeln!(s, "  - {}", one_line(gap));
                }
            }
        }
        let _ = writeln!(
            s,
            "- eBPF programs pinned under `{PIN_DIR}` after a root run: **{}**{}",
            if self.pinned { "yes" } else { "no" },
            if self.pinned {
                ". Pinned tracepoint programs stay attached system-wide, so the bare runs \
                 below also pay their (early-exit) cost"
            } else {
                " (this build loads no eBPF layer as root: cold and warm start-up take the same path)"
            }
        );
        for note in &self.notes {
            let _ = writeln!(s, "- {}", one_line(note));
        }

        let _ = writeln!(s, "\n## Results\n");
        for table in &self.tables {
            let _ = writeln!(s, "{}", table.markdown());
        }

        let _ = writeln!(
            s,
            "### Event pipeline: denial storms from one process\n\n\
             One process repeats a denied operation; the audit log is read back. `events/s` is \
             denials delivered into the log per second between the first and the last denial's \
             timestamps, so it is bounded by how fast the one agent produces them; events per \
             supervisor CPU-second (delivered / the supervisor's own CPU time) estimates what \
             the drain could take. `exact` means delivered + lost (Loss records) == \
             attempts.\n\n\
             | storm | attempts | delivered | lost | exact | events/s | events per supervisor CPU-s | agent ns/denied op | wall | supervisor CPU | supervisor VmHWM | wait4 maxrss |\n\
             | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for (name, results) in &self.storms {
            for r in results {
                let _ = writeln!(
                    s,
                    "| {name} | {} | {} | {} | {} | {} | {} | {:.0} | {:.2} s | {} | {} | {} KiB |",
                    r.attempts,
                    r.delivered,
                    r.lost,
                    if r.delivered + r.lost == r.attempts {
                        "yes"
                    } else if r.delivered + r.lost == 0 {
                        "– (not logged)"
                    } else {
                        "no"
                    },
                    r.rate.map_or("–".into(), |x| format!("{x:.0}")),
                    r.self_cpu
                        .filter(|c| !c.is_zero() && r.delivered > 0)
                        .map_or("–".into(), |c| format!(
                            "{:.0}",
                            r.delivered as f64 / c.as_secs_f64()
                        )),
                    r.agent_ns_per_op,
                    r.wall.as_secs_f64(),
                    r.self_cpu
                        .map_or("–".into(), |c| format!("{:.2} s", c.as_secs_f64())),
                    r.vm_hwm_kb.map_or("–".into(), |k| format!("{k} KiB")),
                    r.maxrss_kb
                );
            }
        }
        s.push_str(
            "\nSupervisor CPU: utime + stime of the agentbox process itself (children excluded), \
             from /proc/PID/stat read while it was a zombie. VmHWM: its own peak resident set, \
             sampled every 5 ms: the supervisor's memory. wait4 maxrss: the larger of its peak \
             and its reaped descendants'; the agent is a ~1 MB Rust program, but the sandbox's \
             init is forked from the supervisor and counts the mappings it inherits (the \
             eBPF ring buffers among them), so this column can exceed VmHWM.\n",
        );

        let _ = writeln!(
            s,
            "\n### Supervisor memory of a plain start-up\n\n| run | wall | supervisor CPU | VmHWM | wait4 maxrss |\n| --- | ---: | ---: | ---: | ---: |"
        );
        for (name, sample) in &self.startup_memory {
            let _ = writeln!(
                s,
                "| {name} | {:.2} ms | {} | {} | {} KiB |",
                sample.wall.as_secs_f64() * 1e3,
                sample
                    .self_cpu
                    .map_or("–".into(), |c| format!("{:.0} ms", c.as_secs_f64() * 1e3)),
                sample
                    .vm_hwm_kb
                    .filter(|&k| k > 0)
                    .map_or("– (exited before the first sample)".into(), |k| format!(
                        "{k} KiB"
                    )),
                sample.maxrss_kb
            );
        }
        s.push_str(METHOD);
        s
    }
}

/// Known causes, stated once for the reader of the targets table.
const WHY: &str = "
Why, where a target is missed (check against the tables below):
- Start-up: agentbox resolves the profile, compiles the Landlock ruleset and seccomp program,
  walks the allowed trees for deny-glob omissions (on a second thread, beside the protect
  search), forks an init in new namespaces and writes the launch record; as root it also
  opens the pinned eBPF objects (cold: loads and pins them; warm: on a thread while the
  profile loads), creates the sandbox's cgroup and attaches the syscall observer when no
  other sandbox runs (a tracepoint's first probe patches kernel text on every CPU, and its
  IPIs wait for a descheduled vCPU: done on a thread beside the plan, joined before the
  sandbox registers; the fork/exec/exit observers stay attached). Ring slots and
  the cgroup programs on the parent group spare the RCU grace periods a per-run map-of-maps
  update waited for; init is cloned straight into its cgroup2 group and joins a hybrid
  host's v1 pids group itself (writing 0 to `tasks` spares the grace period a move by pid
  waits for). Left on the path (unprivileged, debug timings): compiling the deny and env glob
  sets (~1 ms), a Landlock rule per allowed path (/etc is listed entry by entry around
  /etc/shadow: ~150 rules), the empty network namespace of an offline profile (~0.5 ms),
  the agentbox binary's own start (~0.9 ms over /bin/true). bwrap only sets up namespaces
  and mounts.
- Operation loops and idle cost: Landlock checks every open against the ruleset, walking up
  to the nearest rule that grants all it asks (read-only rules carry TRUNCATE under the view,
  so that is the tree's own rule); while any sandbox runs as root, the raw syscall
  tracepoint puts every process of the machine on the slow syscall path (the observer that
  labels denials with their path). Without BPF LSM nothing else reports the mounts layer's
  read-only refusals, so it stays while a sandbox runs; it is detached with the last
  sandbox. The fork/exec/exit observers stay attached (their cost: the second idle table).
- Denial storms: a seccomp-denied syscall is a synchronous user-notification round trip (the
  agent waits for the supervisor's answer), so its rate is bounded by two context switches per
  event; file denials need the tracepoint observers (root) to be reported at all.
";

const METHOD: &str = "
## Method

- `cargo xtask bench` (full, about 10 minutes on 2 cores) or `cargo xtask bench --quick` (a
  smoke run of about a minute) regenerates this file; it never runs in `cargo xtask test`.
- Workload program: `bench/ops.rs` (std only, `rustc -O`), run bare and inside each sandbox;
  it times N iterations of one operation itself, so start-up is not in the per-op numbers.
- Unprivileged runs are uid/gid 65534 (`nobody`) with no supplementary groups.
- Cold start-up removes `/sys/fs/bpf/agentbox` before each run; warm runs follow a cold one.
- bwrap runs with `--ro-bind / /` (plus `--dev /dev --bind SCRATCH SCRATCH` for the loops and
  workloads: they write, and bwrap's binds are nodev);
  firejail with `--quiet --noprofile`.
- Bench profiles extend `default`: read + exec on the ops program's directory; the connect
  loop adds `[network] allow = [\"127.0.0.1:PORT\"]` (addresses need cgroup-BPF, i.e. root;
  where agentbox refuses, the run uses `--best-effort` and says so above); the cargo workload
  adds read + exec on the Rust toolchain's sysroot (cargo and rustc are called from there with
  CARGO_HOME and the target directory in the workspace).
";

// ---------------------------------------------------------------------------------------------
// Helpers

fn build_release_agentbox() -> Res<PathBuf> {
    cargo_executables(
        &["build", "--release", "-p", "agentbox", "--bin", "agentbox"],
        |m| m["target"]["name"] == "agentbox",
    )?
    .into_iter()
    .next()
    .ok_or_else(|| "cargo built no `agentbox` executable".into())
}

/// Effective uid 0, read from /proc (no libc).
fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let uid = status.lines().find(|l| l.starts_with("Uid:"))?;
            // "Uid: real effective saved fs"
            uid.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

fn sysroot() -> Res<PathBuf> {
    let out = capture(
        Command::new("rustc")
            .args(["--print", "sysroot"])
            .current_dir(root()),
    );
    if out.is_empty() {
        return Err("`rustc --print sysroot` printed nothing".into());
    }
    Ok(PathBuf::from(out))
}

fn tool_exists(tool: &str) -> bool {
    if tool.contains('/') {
        return Path::new(tool).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// Trimmed stdout of a command, empty on any failure (only for descriptive fields).
fn capture(command: &mut Command) -> String {
    command
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn write(path: &Path, text: &str) -> Res<()> {
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// "name: reason" entries as a list of names (the reasons are listed once, above).
fn gap_names(gaps: &[String]) -> String {
    let names: Vec<&str> = gaps
        .iter()
        .map(|g| g.split(':').next().unwrap_or(g))
        .collect();
    names.join(", ")
}

/// Text for a markdown table cell: one line, `|` escaped.
fn cell(text: &str) -> String {
    one_line(text).replace('|', "\\|")
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn tail(text: &str, max: usize) -> &str {
    let start = text.len().saturating_sub(max);
    let start = (start..=text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    &text[start..]
}

/// `cp -a`: the workload trees keep their modes and are copied as they are.
fn copy_tree(from: &Path, to: &Path) -> Res<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    crate::run(
        Command::new("cp")
            .args(["-a", "--no-preserve=ownership"])
            .arg(from)
            .arg(to),
    )?;
    // Byte-compiling must do the work, not find caches copied along.
    crate::run(Command::new("find").arg(to).args([
        "-name",
        "__pycache__",
        "-prune",
        "-exec",
        "rm",
        "-rf",
        "{}",
        "+",
    ]))
}

fn chown_tree(path: &Path, uid: u32) -> Res<()> {
    crate::run(
        Command::new("chown")
            .args(["-R", &format!("{uid}:{uid}")])
            .arg(path),
    )
}

/// A temporary directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Res<Self> {
        let path = std::env::temp_dir().join(format!("agentbox-bench-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Scratch(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The libc calls std does not offer: waiting without reaping (to read a zombie's own CPU
/// times), wait4's rusage, the clock tick rate, and a listen backlog. Declared by hand
/// because xtask depends on std + serde_json only; glibc is linked into every std binary.
mod sys {
    use std::io;

    #[repr(C)]
    struct Timeval {
        sec: i64,
        usec: i64,
    }

    /// struct rusage on 64-bit Linux: two timevals and fourteen longs.
    #[repr(C)]
    struct Rusage {
        utime: Timeval,
        stime: Timeval,
        maxrss: i64,
        rest: [i64; 13],
    }

    const P_PID: u32 = 1;
    const WEXITED: i32 = 4;
    const WNOWAIT: i32 = 0x0100_0000;
    const SC_CLK_TCK: i32 = 2;
    const EINTR: i32 = 4;

    extern "C" {
        fn waitid(idtype: u32, id: u32, infop: *mut u64, options: i32) -> i32;
        #[link_name = "wait4"]
        fn c_wait4(pid: i32, status: *mut i32, options: i32, rusage: *mut Rusage) -> i32;
        fn sysconf(name: i32) -> i64;
        fn listen(fd: i32, backlog: i32) -> i32;
    }

    /// listen(2) again on a listening socket: Linux then takes the new backlog.
    pub(super) fn relisten(fd: i32, backlog: i32) -> io::Result<()> {
        // SAFETY: listen only reads its scalar arguments; `fd` is a live socket.
        if unsafe { listen(fd, backlog) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Blocks until `pid` (our child) has exited, leaving it a zombie.
    pub(super) fn wait_exited_nowait(pid: i32) -> io::Result<()> {
        // siginfo_t is 128 bytes on Linux.
        let mut info = [0u64; 16];
        loop {
            // SAFETY: `info` is a writable buffer of siginfo_t's size.
            let ret = unsafe { waitid(P_PID, pid as u32, info.as_mut_ptr(), WEXITED | WNOWAIT) };
            if ret == 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(EINTR) {
                return Err(err);
            }
        }
    }

    /// Reaps `pid`: its wait status and ru_maxrss (KiB).
    pub(super) fn reap(pid: i32) -> io::Result<(i32, u64)> {
        let mut status = 0;
        // SAFETY: all-zero is a valid struct rusage (plain integers).
        let mut usage: Rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: `status` and `usage` are valid, writable and correctly sized.
            let ret = unsafe { c_wait4(pid, &mut status, 0, &mut usage) };
            if ret == pid {
                return Ok((status, usage.maxrss.max(0) as u64));
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(EINTR) {
                return Err(err);
            }
        }
    }

    pub(super) fn clock_ticks_per_second() -> Option<u64> {
        // SAFETY: sysconf only reads a configuration value.
        let hz = unsafe { sysconf(SC_CLK_TCK) };
        (hz > 0).then_some(hz as u64)
    }

    pub(super) fn describe_status(status: i32) -> String {
        let signal = status & 0x7f;
        if signal == 0 {
            format!("exit status {}", (status >> 8) & 0xff)
        } else {
            format!("killed by signal {signal}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_median_min_max() {
        let s = Stats::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (3.0, 1.0, 5.0, 3));
        let even = Stats::of(&[4.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!(even.median, 3.0);
        assert_eq!((even.min, even.max), (1.0, 10.0));
        assert!(Stats::of(&[]).is_none());
        assert_eq!(Stats::of(&[f64::NAN, 2.0]).unwrap().median, 2.0);
        assert!((even.ratio(&s) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn alternate_interleaves_and_drops_warm_up() {
        let mut order = Vec::new();
        let mut tick = 0.0;
        let samples = alternate(&["a", "b"], 2, |v| {
            order.push(*v);
            tick += 1.0;
            Ok(tick)
        })
        .unwrap();
        assert_eq!(order, ["a", "b", "a", "b", "a", "b"]);
        // Round 0 (samples 1.0 and 2.0) is the warm-up.
        assert_eq!(samples, vec![vec![3.0, 5.0], vec![4.0, 6.0]]);
    }

    #[test]
    fn ops_report_and_timestamps_parse() {
        let r = parse_ops("noise\nns_per_op=1234.5 ops=100 failed=0\n").unwrap();
        assert_eq!((r.ns_per_op, r.ops, r.failed), (1234.5, 100, 0));
        assert!(parse_ops("nothing").is_err());
        assert_eq!(parse_rfc3339_secs("1970-01-02T00:00:01.5Z"), Some(86_401.5));
        let a = parse_rfc3339_secs("2026-11-24T23:59:59.75Z").unwrap();
        let b = parse_rfc3339_secs("2026-11-25T00:00:00.25Z").unwrap();
        assert!((b - a - 0.5).abs() < 1e-6);
        assert_eq!(parse_rfc3339_secs("2026-11-24 05:29:09"), None);
    }

    #[test]
    fn target_verdicts() {
        assert!(Target::ratio("x", 1.05, 1.10).met);
        let missed = Target::ratio("x", 1.21, 1.10);
        assert!(!missed.met);
        assert_eq!(missed.gap.as_deref(), Some("+10.0% over the 1.10x budget"));
    }
}
