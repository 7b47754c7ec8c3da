//! Shared helpers for agentbox integration tests.
//!
//! `Scenario` gives each test its own temporary HOME, workspace, TMPDIR and audit log paths
//! (never the user's real files), runs the real `agentbox` binary as the current user or, when
//! root, as `nobody`, and returns the exit status, output and parsed audit log. Every log a run
//! leaves behind is checked with `agentbox audit verify`.

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod bpf;

/// uid and gid of `nobody` / `nogroup` on Debian.
pub const NOBODY: u32 = 65534;

/// A clean PATH for agents: system directories only (a developer's ~/.pyenv shims or
/// ~/.cargo/bin are outside every profile's exec list).
pub const AGENT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The `agentbox` binary: `$AGENTBOX_BIN`, else `target/<profile>/agentbox` next to this test
/// executable's `deps` directory.
pub fn agentbox_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("AGENTBOX_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .join("agentbox");
    assert!(
        bin.exists(),
        "{} does not exist: run `cargo build -p agent-sandbox` first or set AGENTBOX_BIN",
        bin.display()
    );
    bin
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and has no side effects.
    unsafe { libc::geteuid() == 0 }
}

/// Who runs `agentbox` in a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAs {
    /// Whoever runs the tests.
    Current,
    /// uid/gid 65534, dropped in the spawned child (needs root).
    Nobody,
}

impl RunAs {
    /// Both users when the tests run as root, else only the current one.
    pub fn all() -> Vec<RunAs> {
        if is_root() {
            vec![RunAs::Current, RunAs::Nobody]
        } else {
            vec![RunAs::Current]
        }
    }

    /// An unprivileged user: `Nobody` as root, else the current (unprivileged) user.
    pub fn unprivileged() -> RunAs {
        if is_root() {
            RunAs::Nobody
        } else {
            RunAs::Current
        }
    }
}

/// One temporary world for one or more agentbox runs.
#[derive(Debug)]
pub struct Scenario {
    root: tempfile::TempDir,
    pub home: PathBuf,
    pub workspace: PathBuf,
    pub tmp: PathBuf,
    pub run_as: RunAs,
    /// Extra environment for agentbox (and thus, filtered by the profile, the agent).
    pub env: Vec<(OsString, OsString)>,
    runs: AtomicU32,
}

/// What one run produced.
#[derive(Debug)]
pub struct RunResult {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// The audit log, when the run wrote one.
    pub log: Option<PathBuf>,
    /// Every record of the log, parsed.
    pub records: Vec<Value>,
}

impl RunResult {
    /// agentbox's exit code (None if agentbox itself was killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The denial records.
    pub fn denials(&self) -> Vec<&Value> {
        self.records
            .iter()
            .filter(|r| r["type"] == "denial")
            .collect()
    }

    /// The first record of type `t`.
    pub fn record(&self, t: &str) -> Option<&Value> {
        self.records.iter().find(|r| r["type"] == t)
    }

    /// Every record of type `t`.
    pub fn records_of(&self, t: &str) -> Vec<&Value> {
        self.records.iter().filter(|r| r["type"] == t).collect()
    }

    /// The denial records of one layer.
    pub fn denials_of(&self, layer: &str) -> Vec<&Value> {
        self.records
            .iter()
            .filter(|r| r["type"] == "denial" && r["layer"] == layer)
            .collect()
    }

    /// The run's sandbox id (from the first record).
    pub fn sandbox_id(&self) -> Option<&str> {
        self.records.first().and_then(|r| r["sandbox"].as_str())
    }

    /// Lines `LABEL ok` / `LABEL err ERRNO` printed by a `probe_script`, as label → result.
    pub fn attempts(&self) -> std::collections::BTreeMap<String, Attempt> {
        self.stdout
            .lines()
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                let label = parts.next()?.to_string();
                let result = match (parts.next()?, parts.next()) {
                    ("ok", _) => Attempt::Ok,
                    ("err", Some(n)) => Attempt::Err(n.parse().ok()?),
                    _ => return None,
                };
                Some((label, result))
            })
            .collect()
    }

    /// The result of attempt `label`; panics with the run's output when it is missing.
    pub fn attempt(&self, label: &str) -> Attempt {
        *self
            .attempts()
            .get(label)
            .unwrap_or_else(|| panic!("no attempt {label}: {}", self.dump()))
    }

    /// Panics with the whole run output, for assertion messages.
    pub fn dump(&self) -> String {
        format!(
            "status: {:?}\n--- stdout\n{}\n--- stderr\n{}\n--- log ({} records)\n{}",
            self.status,
            self.stdout,
            self.stderr,
            self.records.len(),
            self.records
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    }
}

impl Scenario {
    pub fn new(run_as: RunAs) -> Scenario {
        let root = tempfile::Builder::new()
            .prefix("agentbox-test-")
            .tempdir()
            .expect("tempdir");
        let home = root.path().join("home");
        let workspace = root.path().join("workspace");
        let tmp = root.path().join("tmp");
        for d in [&home, &workspace, &tmp, &root.path().join("logs")] {
            fs::create_dir_all(d).expect("create scenario dir");
        }
        let s = Scenario {
            root,
            home,
            workspace,
            tmp,
            run_as,
            env: Vec::new(),
            runs: AtomicU32::new(0),
        };
        s.fix_ownership();
        s
    }

    /// The scenario's root directory (holds home/, workspace/, tmp/, logs/, profiles).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Hands the whole tree to `nobody` when running as nobody (so HOME and the workspace are
    /// its own); the root dir must be traversable by it either way.
    pub fn fix_ownership(&self) {
        fs::set_permissions(self.root(), fs::Permissions::from_mode(0o755)).expect("chmod root");
        if self.run_as == RunAs::Nobody {
            chown_tree(self.root(), NOBODY, NOBODY);
        }
    }

    /// Writes `content` at `rel` under HOME (parents created), owned by the run-as user.
    pub fn plant_in_home(&self, rel: &str, content: &str) -> PathBuf {
        self.plant(&self.home, rel, content)
    }

    /// Writes `content` at `rel` under the workspace.
    pub fn plant_in_workspace(&self, rel: &str, content: &str) -> PathBuf {
        self.plant(&self.workspace, rel, content)
    }

    fn plant(&self, base: &Path, rel: &str, content: &str) -> PathBuf {
        let p = base.join(rel);
        fs::create_dir_all(p.parent().expect("has parent")).expect("mkdir");
        fs::write(&p, content).expect("write planted file");
        self.fix_ownership();
        p
    }

    /// Writes a profile file (outside the workspace) and returns its path.
    pub fn profile(&self, name: &str, text: &str) -> PathBuf {
        let p = self.root().join(format!("{name}.toml"));
        fs::write(&p, text).expect("write profile");
        self.fix_ownership();
        p
    }

    /// A fresh audit log path for the next run (agentbox never reuses a log file).
    pub fn next_log(&self) -> PathBuf {
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        self.root().join("logs").join(format!("audit-{n}.jsonl"))
    }

    /// `agentbox run --log LOG ARGS... -- CMD...`, with a clean environment (PATH, HOME, USER,
    /// TMPDIR, plus `self.env`), the workspace as cwd, stdin closed, as the scenario's user.
    pub fn command(&self, args: &[&str], cmd: &[&str], log: &Path) -> Command {
        let mut c = Command::new(agentbox_bin());
        c.arg("run")
            .arg("--log")
            .arg(log)
            .args(args)
            .arg("--")
            .args(cmd);
        c.env_clear()
            .env("PATH", AGENT_PATH)
            .env("HOME", &self.home)
            .env("TMPDIR", &self.tmp)
            .env(
                "USER",
                if self.run_as == RunAs::Nobody {
                    "nobody"
                } else {
                    "tester"
                },
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.workspace)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if self.run_as == RunAs::Nobody {
            // std calls setgroups(0), setgid, then setuid in the child before exec (the same
            // as a pre_exec hook would); setuid from root clears every capability.
            c.uid(NOBODY).gid(NOBODY);
        }
        c
    }

    /// Runs agentbox to completion (60 s at most) and collects everything.
    pub fn run(&self, args: &[&str], cmd: &[&str]) -> RunResult {
        let log = self.next_log();
        let child = self
            .command(args, cmd, &log)
            .spawn()
            .expect("spawn agentbox");
        self.finish(child, &log, Duration::from_secs(60))
    }

    /// Runs a `probe_script` (Python attempts after `PROBE_PRELUDE`) under agentbox.
    pub fn run_probe(&self, args: &[&str], body: &str) -> RunResult {
        let cmd = probe_script(body);
        let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
        self.run(args, &cmd)
    }

    /// Spawns agentbox without waiting; pair with `finish`.
    pub fn spawn(&self, args: &[&str], cmd: &[&str]) -> (Child, PathBuf) {
        let log = self.next_log();
        let child = self
            .command(args, cmd, &log)
            .spawn()
            .expect("spawn agentbox");
        (child, log)
    }

    /// Waits for a spawned agentbox (killing it after `timeout`), reads its output, parses its
    /// log and checks that the log verifies.
    pub fn finish(&self, mut child: Child, log: &Path, timeout: Duration) -> RunResult {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let st = child.wait().expect("wait");
                panic!("agentbox did not finish within {timeout:?} (killed: {st:?})");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // Surviving processes (the bug some tests look for) may hold the pipes open: read in
        // threads and give up after a while instead of hanging the test.
        let stdout = read_in_thread(child.stdout.take());
        let stderr = read_in_thread(child.stderr.take());
        let stdout = join_output(stdout);
        let stderr = join_output(stderr);
        let (log, records) = if log.exists() {
            let text = fs::read_to_string(log).expect("read audit log");
            let records = text
                .lines()
                .map(|l| {
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("bad log line {l:?}: {e}"))
                })
                .collect();
            verify_log(log);
            (Some(log.to_path_buf()), records)
        } else {
            (None, Vec::new())
        };
        RunResult {
            status,
            stdout,
            stderr,
            log,
            records,
        }
    }
}

fn read_in_thread(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut out = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut out);
        }
        out
    })
}

fn join_output(h: std::thread::JoinHandle<String>) -> String {
    if wait_until(Duration::from_secs(5), || h.is_finished()) {
        h.join().unwrap_or_default()
    } else {
        "<output pipe still held open by a surviving process>".to_string()
    }
}

/// `agentbox audit verify LOG` must succeed.
pub fn verify_log(log: &Path) {
    let out = Command::new(agentbox_bin())
        .args(["audit", "verify"])
        .arg(log)
        .output()
        .expect("run agentbox audit verify");
    assert!(
        out.status.success(),
        "audit verify {} failed: {}{}",
        log.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).expect("chown");
    if path.is_dir() && !path.is_symlink() {
        for entry in fs::read_dir(path).expect("read_dir").flatten() {
            chown_tree(&entry.path(), uid, gid);
        }
    }
}

/// Every live descendant of `pid` (from /proc, by parent pid), depth first.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut parents: Vec<(i32, i32)> = Vec::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some((ppid, _)) = stat(p) {
            parents.push((p, ppid));
        }
    }
    let mut out = Vec::new();
    let mut stack = vec![pid];
    while let Some(cur) = stack.pop() {
        for &(p, pp) in &parents {
            if pp == cur {
                out.push(p);
                stack.push(p);
            }
        }
    }
    out
}

/// (parent pid, state letter) of a process, from /proc/PID/stat.
fn stat(pid: i32) -> Option<(i32, char)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything: split after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// True while `pid` exists and is not a zombie (a zombie has already released everything).
pub fn is_alive(pid: i32) -> bool {
    matches!(stat(pid), Some((_, state)) if state != 'Z' && state != 'X')
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `sig` to `pid`.
pub fn kill(pid: u32, sig: libc::c_int) {
    // SAFETY: kill has no memory side effects; the pid is a child the test spawned.
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(
        r,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// The signal that killed a process, if any.
pub fn signal_of(status: &ExitStatus) -> Option<i32> {
    status.signal()
}

/// One attempt of a `probe_script`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Ok,
    Err(i32),
}

/// A Python prelude for agents that try things: `attempt(label, fn)` prints `label ok` or
/// `label err ERRNO`, and never raises. Append the attempts after it.
pub const PROBE_PRELUDE: &str = "\
import errno, os, socket, sys, threading, time
def attempt(label, fn):
    try:
        fn()
        print(label, 'ok', flush=True)
    except OSError as e:
        print(label, 'err', e.errno, flush=True)
def connect(host, port, family=socket.AF_INET):
    def go():
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(3)
            s.connect((host, port))
    return go
";

/// `/usr/bin/python3 -c PRELUDE+body`, as the command of a run.
pub fn probe_script(body: &str) -> Vec<String> {
    vec![
        "/usr/bin/python3".to_string(),
        "-c".to_string(),
        format!("{PROBE_PRELUDE}{body}"),
    ]
}

/// A TCP listener on a loopback address that accepts (and counts) connections in a thread
/// until dropped.
#[derive(Debug)]
pub struct TcpServer {
    pub port: u16,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TcpServer {
    /// Listens on `ip` (`127.0.0.1`, `127.0.0.2`, `::1`), port chosen by the kernel.
    pub fn start(ip: &str) -> TcpServer {
        use std::sync::atomic::{AtomicBool, AtomicUsize};
        use std::sync::Arc;
        let ip: std::net::IpAddr = ip.parse().expect("ip");
        let l = std::net::TcpListener::bind((ip, 0)).expect("bind test server");
        let port = l.local_addr().expect("local addr").port();
        l.set_nonblocking(true).expect("nonblocking");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, st) = (Arc::clone(&accepted), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok(_) => {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        TcpServer {
            port,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// True when the eBPF layers (cgroup-BPF, observers, cgroups) can run: agentbox as root.
/// Prints why a test is skipped otherwise.
pub fn ebpf_tier(test: &str) -> bool {
    if !is_root() {
        eprintln!("skipping {test}: the eBPF layers need root");
        return false;
    }
    true
}

/// Where the sandbox's cgroup2 group lives (`<cgroup2 mount>/agentbox/<sandbox id>`).
pub fn sandbox_cgroup(sandbox: &str) -> Option<PathBuf> {
    agent_sandbox::cgroup2_mount().map(|m| m.join("agentbox").join(sandbox))
}

/// An authoritative DNS server for tests, on 127.0.0.1 (UDP): fixed A and CNAME records,
/// NXDOMAIN for the rest, every query counted. agentbox's resolver uses it as upstream
/// (`--dns-upstream`); the agent never reaches it directly.
#[derive(Debug)]
pub struct DnsServer {
    pub addr: std::net::SocketAddr,
    queries: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One record of a [`DnsServer`]: `name` → an IPv4 address, or a CNAME to another name.
#[derive(Debug, Clone)]
pub enum DnsRecord {
    A(&'static str, std::net::Ipv4Addr, u32),
    Cname(&'static str, &'static str, u32),
}

impl DnsServer {
    pub fn start(records: Vec<DnsRecord>) -> DnsServer {
        use simple_dns::rdata::{RData, A, CNAME};
        use simple_dns::{Name, Packet, PacketFlag, ResourceRecord, CLASS, RCODE};
        use std::sync::atomic::AtomicBool;
        use std::sync::{Arc, Mutex};
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind test DNS server");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let addr = socket.local_addr().expect("addr");
        let queries = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (q, st) = (Arc::clone(&queries), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(query) = Packet::parse(&buf[..n]) else {
                    continue;
                };
                let Some(question) = query.questions.first() else {
                    continue;
                };
                let asked = question.qname.to_string().to_ascii_lowercase();
                q.lock().unwrap().push(asked.clone());
                let mut reply = Packet::new_reply(query.id());
                reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
                reply.questions.push(question.clone());
                // Follow CNAMEs from the asked name; only A records are served.
                let is_a = format!("{:?}", question.qtype).contains("TYPE(A)");
                let mut name = asked.clone();
                for _ in 0..8 {
                    let mut next = None;
                    for record in &records {
                        match record {
                            DnsRecord::Cname(owner, target, ttl) if *owner == name => {
                                reply.answers.push(ResourceRecord::new(
                                    Name::new_unchecked(owner),
                                    CLASS::IN,
                                    *ttl,
                                    RData::CNAME(CNAME(Name::new_unchecked(target))),
                                ));
                                next = Some(target.to_string());
                            }
                            DnsRecord::A(owner, ip, ttl) if *owner == name && is_a => {
                                reply.answers.push(ResourceRecord::new(
                                    Name::new_unchecked(owner),
                                    CLASS::IN,
                                    *ttl,
                                    RData::A(A {
                                        address: u32::from(*ip),
                                    }),
                                ));
                            }
                            _ => {}
                        }
                    }
                    match next {
                        Some(n) => name = n,
                        None => break,
                    }
                }
                let known = records.iter().any(|r| match r {
                    DnsRecord::A(o, ..) | DnsRecord::Cname(o, ..) => *o == asked,
                });
                if !known {
                    *reply.rcode_mut() = RCODE::NameError;
                }
                if let Ok(bytes) = reply.build_bytes_vec() {
                    let _ = socket.send_to(&bytes, peer);
                }
            }
        });
        DnsServer {
            addr,
            queries,
            stop,
            thread: Some(thread),
        }
    }

    /// The names asked so far, in order.
    pub fn queries(&self) -> Vec<String> {
        self.queries.lock().unwrap().clone()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// This host's address on its default route (not loopback: agentbox never opens loopback to
/// a name), if it has one.
pub fn host_address() -> Option<std::net::Ipv4Addr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.254:9").ok()?;
    match s.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_unspecified() => Some(v4),
        _ => None,
    }
}

/// This kernel's Landlock ABI (0 without Landlock).
pub fn landlock_abi() -> i64 {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION (1) with a NULL attribute and size 0 only
    // returns the ABI version.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    abi.max(0)
}

/// A directory for the approval socket outside every tree of the sandbox, owned by the
/// user agentbox runs as.
pub fn approval_socket_dir(s: &Scenario) -> PathBuf {
    let dir = s.root().join("approvals");
    std::fs::create_dir_all(&dir).unwrap();
    if s.run_as == RunAs::Nobody {
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    }
    dir
}

/// Answers each request with the next of `answers` (after `delay`), and returns what it was
/// asked, once the socket closes.
pub fn approver(
    path: PathBuf,
    answers: Vec<Value>,
    delay: Duration,
) -> std::thread::JoinHandle<Vec<Value>> {
    std::thread::spawn(move || {
        assert!(
            wait_until(Duration::from_secs(30), || path.exists()),
            "approval socket {} never appeared",
            path.display()
        );
        let stream =
            std::os::unix::net::UnixStream::connect(&path).expect("connect to the approval socket");
        let mut writer = stream.try_clone().unwrap();
        let mut asked = Vec::new();
        let mut answers = answers.into_iter();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stream)) {
            let Ok(line) = line else { break };
            let request: Value = serde_json::from_str(&line).expect("a JSON line");
            if request["type"] != "request" {
                continue;
            }
            std::thread::sleep(delay);
            let mut answer = answers
                .next()
                .unwrap_or(serde_json::json!({"decision": "deny"}));
            answer["id"] = request["id"].clone();
            std::io::Write::write_all(&mut writer, format!("{answer}\n").as_bytes()).unwrap();
            asked.push(request);
        }
        asked
    })
}

/// The test binary itself as the agent, running only the ignored test `module::name`, so a
/// test needs no interpreter (the VM guests have none). `module` is the caller's
/// `module_path!()`: the crate prefix is dropped (`dns` on the host, `dns_host` in the VM).
pub fn self_agent(module: &str, name: &str) -> Vec<String> {
    let exe = std::env::current_exe().expect("test binary");
    let module = module.split_once("::").map_or("", |(_, m)| m);
    vec![
        exe.display().to_string(),
        format!("{module}::{name}"),
        "--exact".into(),
        "--ignored".into(),
        "--nocapture".into(),
        "--test-threads=1".into(),
    ]
}
