//! `agentbox selftest`: attack this machine's sandbox with the escape suite and report what
//! holds.
//!
//! Each technique of docs/attacks.md is one attack (`attacks.rs`) that really tries the escape
//! from inside `agentbox run --profile P -- agentbox selftest --attack NAME`, in a throwaway
//! HOME and workspace with planted fake secrets. The orchestrator (here) then checks BOTH that
//! the attempt failed (the attack's own report, plus what the host side saw: connections on
//! its listeners, files that appeared) AND that the audit log verifies and holds the expected
//! denial (layer, rule, process, object). Where this kernel or these privileges lack a layer,
//! the launch record says so and the expected result is the documented degraded one
//! (`held-not-logged`, `not-enforced-here`), never a pass by accident.

pub mod attacks;
pub mod catalogue;

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use serde::Serialize;
use serde_json::Value;

pub use attacks::{Attempt, Ctx};
pub use catalogue::{Expect, Setup, Spec, CATALOGUE};

use agent_sandbox::policy::Guarantee;

/// Line prefix of the attack's report on stdout.
pub const ATTEMPT_PREFIX: &str = "agentbox-selftest-attempt: ";

/// The outcome of one technique.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", content = "reason", rename_all = "kebab-case")]
pub enum Verdict {
    /// Denied, and the audit log holds the expected event (or none exists by construction).
    Held,
    /// Denied, but the event is missing for a documented reason (a layer that cannot report
    /// here, or by design).
    HeldNotLogged(String),
    /// The sandbox failed: the attack worked although the guarantee is enforced here, or the
    /// event that must exist is missing, or the log does not verify.
    Failed(String),
    /// The technique does not exist here (kernel without IA32 emulation, a profile that does
    /// not protect the target, ...).
    NotApplicable(String),
    /// The attack worked and the launch record says the guarantee is not enforced here (why).
    NotEnforcedHere(String),
    /// The attack worked through a limitation no layer of this build covers (documented).
    KnownGap(String),
}

impl Verdict {
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Held => "held",
            Verdict::HeldNotLogged(_) => "held-not-logged",
            Verdict::Failed(_) => "FAILED",
            Verdict::NotApplicable(_) => "not-applicable-here",
            Verdict::NotEnforcedHere(_) => "not-enforced-here",
            Verdict::KnownGap(_) => "known-gap",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Verdict::Held => None,
            Verdict::HeldNotLogged(r)
            | Verdict::Failed(r)
            | Verdict::NotApplicable(r)
            | Verdict::NotEnforcedHere(r)
            | Verdict::KnownGap(r) => Some(r),
        }
    }

    pub fn is_failure(&self) -> bool {
        matches!(self, Verdict::Failed(_))
    }
}

/// One technique's full result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub name: String,
    pub family: String,
    pub technique: String,
    /// The layer that stopped it: from the event when there is one, else the expected layer.
    pub layer: String,
    pub verdict: Verdict,
    pub attempt: Option<Attempt>,
    /// The denial records that matched the expectation.
    pub events: Vec<Value>,
    /// What the host side saw (connections, files): evidence of an escape.
    pub evidence: Vec<String>,
    /// Every denial record of the run, when the verdict is FAILED (to see what was logged).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub all_denials: Vec<Value>,
    pub duration_ms: u64,
}

/// How to run the suite.
#[derive(Debug, Clone)]
pub struct Options {
    /// The agentbox binary to run (`agentbox run` and, inside, `agentbox selftest --attack`).
    pub agentbox: PathBuf,
    /// Profile under test: a built-in name or a file.
    pub profile: String,
    /// Keep each attack's scratch directory (for debugging).
    pub keep: bool,
    /// Run with `agentbox run --best-effort`: on a kernel that lacks a guarantee the profile
    /// needs, measure each technique against what IS enforced (the launch record lists the
    /// rest, and the judge reports those as `not-enforced-here`) instead of every technique
    /// being `not-applicable-here` because agentbox refuses to start.
    pub best_effort: bool,
}

impl Options {
    pub fn new(agentbox: PathBuf, profile: &str) -> Self {
        Options {
            agentbox,
            profile: profile.to_string(),
            keep: false,
            best_effort: false,
        }
    }
}

/// Runs every technique in the catalogue (or those in `only`), one after the other.
pub fn run_all(opts: &Options, only: &[String]) -> anyhow::Result<Vec<Report>> {
    for name in only {
        if catalogue::spec_of(name).is_none() {
            anyhow::bail!("unknown attack `{name}` (see `agentbox selftest --list`)");
        }
    }
    Ok(CATALOGUE
        .iter()
        .filter(|s| only.is_empty() || only.iter().any(|o| o == s.name))
        .map(|s| run_one(opts, s))
        .collect())
}

/// Runs one technique by name.
pub fn run_named(opts: &Options, name: &str) -> anyhow::Result<Report> {
    let spec = catalogue::spec_of(name).ok_or_else(|| anyhow!("unknown attack `{name}`"))?;
    Ok(run_one(opts, spec))
}

/// Runs one technique; setup errors become a FAILED report (fail closed).
pub fn run_one(opts: &Options, spec: &Spec) -> Report {
    let start = Instant::now();
    let mut report = match try_run(opts, spec) {
        Ok(r) => r,
        Err(e) => Report {
            name: spec.name.into(),
            family: spec.family.into(),
            technique: spec.technique.into(),
            layer: spec.layer.into(),
            verdict: Verdict::Failed(format!("selftest could not run the attack: {e:#}")),
            attempt: None,
            events: Vec::new(),
            evidence: Vec::new(),
            all_denials: Vec::new(),
            duration_ms: 0,
        },
    };
    report.duration_ms = start.elapsed().as_millis() as u64;
    report
}

/// The in-sandbox side: runs the attack and prints its report on stdout.
pub fn attack_main(name: &str, ctx_json: &str) -> anyhow::Result<()> {
    let f = attacks::find(name).ok_or_else(|| anyhow!("unknown attack `{name}`"))?;
    let ctx: Ctx = serde_json::from_str(ctx_json).context("--ctx")?;
    let attempt = f(&ctx);
    println!("{ATTEMPT_PREFIX}{}", serde_json::to_string(&attempt)?);
    Ok(())
}

/// A throwaway directory, removed on drop unless kept.
struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Host-side fixtures: services outside the sandbox that an escape would reach.
struct Fixtures {
    tcp: TcpListener,
    tcp6: Option<TcpListener>,
    udp: UdpSocket,
    unix: UnixListener,
    /// Held for its socket file; the attacks only need it to exist.
    _unix_dgram: std::os::unix::net::UnixDatagram,
    abstract_sock: Option<UnixListener>,
    abstract_name: String,
    free_port: u16,
}

impl Fixtures {
    fn new(dir: &Path) -> anyhow::Result<Fixtures> {
        let tcp = TcpListener::bind("127.0.0.1:0").context("tcp listener")?;
        tcp.set_nonblocking(true)?;
        let tcp6 = TcpListener::bind("[::1]:0").ok();
        if let Some(l) = &tcp6 {
            l.set_nonblocking(true)?;
        }
        let udp = UdpSocket::bind("127.0.0.1:0").context("udp socket")?;
        udp.set_nonblocking(true)?;
        let unix = UnixListener::bind(dir.join("host-service.sock")).context("unix listener")?;
        unix.set_nonblocking(true)?;
        let unix_dgram = std::os::unix::net::UnixDatagram::bind(dir.join("host-service.dgram"))
            .context("unix datagram socket")?;
        unix_dgram.set_nonblocking(true)?;
        let abstract_name = format!(
            "agentbox-selftest-{}-{}",
            std::process::id(),
            agent_sandbox::audit::new_sandbox_id()
        );
        let abstract_sock = {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
                .and_then(|a| UnixListener::bind_addr(&a))
                .ok()
        };
        if let Some(l) = &abstract_sock {
            l.set_nonblocking(true)?;
        }
        // A port free right now (bound and released) for the bind attack.
        let free_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        Ok(Fixtures {
            tcp,
            tcp6,
            udp,
            unix,
            _unix_dgram: unix_dgram,
            abstract_sock,
            abstract_name,
            free_port,
        })
    }

    /// Everything that reached a fixture.
    fn evidence(&self) -> Vec<String> {
        let mut seen = Vec::new();
        if self.tcp.accept().is_ok() {
            seen.push("the host's TCP listener on 127.0.0.1 accepted a connection".into());
        }
        if self.tcp6.as_ref().is_some_and(|l| l.accept().is_ok()) {
            seen.push("the host's TCP listener on [::1] accepted a connection".into());
        }
        let mut buf = [0u8; 64];
        if self.udp.recv_from(&mut buf).is_ok() {
            seen.push("the host's UDP socket received a datagram".into());
        }
        if self.unix.accept().is_ok() {
            seen.push("the host's pathname UNIX socket accepted a connection".into());
        }
        if self
            .abstract_sock
            .as_ref()
            .is_some_and(|l| l.accept().is_ok())
        {
            seen.push("the host's abstract UNIX socket accepted a connection".into());
        }
        seen
    }
}

/// Marker planted in every fake secret.
fn marker() -> String {
    format!(
        "AGENTBOX-SELFTEST-SECRET-{}",
        agent_sandbox::audit::new_sandbox_id()
    )
}

fn write_file(path: &Path, content: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("mkdir {}", parent.display()))?;
    }
    std::fs::write(path, content).with_context(|| format!("write {}", path.display()))
}

/// `extends = ...` value for the profile under test: built-in names as they are, files made
/// absolute (the generated profile lives elsewhere).
fn extends_value(profile: &str) -> anyhow::Result<String> {
    if agent_sandbox::profile::builtin_names().contains(&profile) {
        return Ok(profile.to_string());
    }
    let p = std::fs::canonicalize(profile).with_context(|| format!("profile {profile}"))?;
    Ok(p.display().to_string())
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Deny or protect globs of `policy` that match `path` (as Landlock omission would: `*` stays
/// in one component). Both keep the agent from writing the file.
/// A glob matching the path or a directory above it: a denied or protected directory covers
/// what is inside (`**/.git/hooks` protects `.git/hooks/pre-commit`).
fn denied_by_globs(policy: &agent_sandbox::policy::Policy, path: &Path) -> bool {
    let fs = &policy.filesystem;
    fs.deny.iter().chain(&fs.protect).any(|g| {
        globset::GlobBuilder::new(&g.pattern)
            .literal_separator(true)
            .build()
            .map(|glob| {
                let matcher = glob.compile_matcher();
                path.ancestors().any(|p| matcher.is_match(p))
            })
            .unwrap_or(false)
    })
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `command` to completion, killing it after `timeout`.
fn run_with_timeout(mut command: Command, timeout: Duration) -> anyhow::Result<Run> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn agentbox run")?;
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut out);
            }
            String::from_utf8_lossy(&out).into_owned()
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("agentbox run did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // A descendant that outlived the sandbox could hold the pipes: do not wait forever.
    let join = |h: std::thread::JoinHandle<String>| {
        let until = Instant::now() + Duration::from_secs(5);
        while !h.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        if h.is_finished() {
            h.join().unwrap_or_default()
        } else {
            "<pipe held open by a process that outlived the sandbox>".into()
        }
    };
    Ok(Run {
        code: status.code(),
        stdout: join(out),
        stderr: join(err),
    })
}

/// Guarantee states from the launch record: name → (enforced, reason).
fn launch_guarantees(records: &[Value]) -> Vec<(String, bool, String)> {
    records
        .first()
        .and_then(|r| r["guarantees"].as_array())
        .map(|gs| {
            gs.iter()
                .map(|g| {
                    (
                        g["guarantee"].as_str().unwrap_or_default().to_string(),
                        g["enforced"].as_bool().unwrap_or(false),
                        g["reason"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn guarantee_name(g: Guarantee) -> String {
    serde_json::to_value(g)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// `Ok(())` when the launch record says `g` is enforced, else why not.
fn enforced(records: &[Value], g: Guarantee) -> Result<(), String> {
    let name = guarantee_name(g);
    match launch_guarantees(records)
        .into_iter()
        .find(|(n, _, _)| *n == name)
    {
        Some((_, true, _)) => Ok(()),
        Some((_, false, reason)) => Err(format!("{name}: {reason}")),
        None => Err(format!("{name}: no layer reports it in this build")),
    }
}

fn denials(records: &[Value]) -> impl Iterator<Item = &Value> {
    records.iter().filter(|r| r["type"] == "denial")
}

/// A denial attributed to a process of the sandbox (pid > 0).
fn attributed(d: &Value) -> bool {
    d["pid"].as_i64().is_some_and(|p| p > 0)
}

/// Whether a denial's object names `target` (path, address:port, or exec path).
fn names_target(d: &Value, target: &str) -> bool {
    let o = &d["object"];
    match o["kind"].as_str() {
        // Anonymous files (memfd) have no path; the kernel names them `/memfd:NAME`.
        Some("path") | Some("exec") => o["path"]
            .as_str()
            .is_some_and(|p| p == target || p.strip_prefix('/') == Some(target)),
        Some("net") => {
            let (addr, port) = (o["addr"].as_str().unwrap_or(""), o["port"].as_u64());
            port.is_some_and(|p| target == format!("{addr}:{p}"))
        }
        Some("unix") => [&o["path"], &o["resolved"]]
            .iter()
            .any(|p| p.as_str() == Some(target)),
        _ => false,
    }
}

fn try_run(opts: &Options, spec: &Spec) -> anyhow::Result<Report> {
    let tmp = std::env::temp_dir().join("agentbox-selftest-XXXXXX");
    let root = nix::unistd::mkdtemp(&tmp).with_context(|| format!("mkdtemp {}", tmp.display()))?;
    let scratch = Scratch {
        path: root.clone(),
        keep: opts.keep,
    };
    // Traversable by everyone: the tree is throwaway and holds only fake secrets.
    std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let home = root.join("home");
    let ws = root.join("workspace");
    let tmpdir = root.join("tmp");
    for d in [&home, &ws, &tmpdir] {
        std::fs::create_dir_all(d)?;
    }
    let secret = marker();
    let ctx_paths = (
        home.join(".ssh/id_rsa"),
        home.join(".aws/credentials"),
        home.join(".config/gh/hosts.yml"),
        ws.join("app/.env"),
    );
    write_file(
        &ctx_paths.0,
        &format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{secret}\n"),
    )?;
    write_file(
        &ctx_paths.1,
        &format!("[default]\naws_secret_access_key = {secret}\n"),
    )?;
    write_file(
        &ctx_paths.2,
        &format!("github.com:\n    oauth_token: {secret}\n"),
    )?;
    if spec.setup.plant_dotenv {
        write_file(&ctx_paths.3, &format!("API_KEY={secret}\n"))?;
    }
    write_file(&ws.join("app/main.py"), "print('hello')\n")?;
    // A repository as git leaves it (HEAD is how the view finds a git directory).
    std::fs::create_dir_all(ws.join(".git/hooks"))?;
    write_file(&ws.join(".git/HEAD"), "ref: refs/heads/main\n")?;
    write_file(
        &ws.join(".git/config"),
        "[core]\n\trepositoryformatversion = 0\n\tbare = false\n",
    )?;

    let fixtures = Fixtures::new(&root)?;
    let (log, profile_path) = if spec.setup.log_in_workspace {
        std::fs::create_dir_all(ws.join(".agentbox"))?;
        (
            ws.join(".agentbox/audit.jsonl"),
            ws.join(".agentbox/profile.toml"),
        )
    } else {
        (root.join("audit.jsonl"), root.join("profile.toml"))
    };

    // The policy under test, resolved for this world: decides applicability and exec access.
    let user = std::env::var("USER").unwrap_or_else(|_| "agentbox-selftest".into());
    let load_opts = agent_sandbox::profile::LoadOptions {
        home: home.clone(),
        workspace: ws.clone(),
        tmpdir: tmpdir.clone(),
        user: user.clone(),
    };
    let policy =
        agent_sandbox::profile::load(&opts.profile, &load_opts).map_err(|e| anyhow!("{e}"))?;
    let mk_report = |verdict: Verdict| Report {
        name: spec.name.into(),
        family: spec.family.into(),
        technique: spec.technique.into(),
        layer: spec.layer.into(),
        verdict,
        attempt: None,
        events: Vec::new(),
        evidence: Vec::new(),
        all_denials: Vec::new(),
        duration_ms: 0,
    };
    if let Some(rel) = spec.setup.protected_target {
        if !denied_by_globs(&policy, &ws.join(rel)) {
            return Ok(mk_report(Verdict::NotApplicable(format!(
                "profile `{}` does not protect {rel} (no deny or protect glob matches it)",
                opts.profile
            ))));
        }
    }

    let agentbox = std::fs::canonicalize(&opts.agentbox)
        .with_context(|| format!("agentbox binary {}", opts.agentbox.display()))?;
    let bin_dir = agentbox.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut profile = format!("extends = {}\n", toml_str(&extends_value(&opts.profile)?));
    // The agent must be able to run agentbox itself: add its directory to the exec list
    // unless a tree of the profile already covers it (an installed /usr/bin/agentbox).
    let exec_covered = policy
        .filesystem
        .exec
        .iter()
        .any(|e| std::fs::canonicalize(e).is_ok_and(|e| bin_dir.starts_with(e)));
    if !exec_covered {
        profile.push_str(&format!(
            "\n[filesystem]\nexec = [{}]\n",
            toml_str(&bin_dir.display().to_string())
        ));
    }
    if let Some(n) = spec.setup.max_processes {
        profile.push_str(&format!("\n[process]\nmax_processes = {n}\n"));
    }
    write_file(&profile_path, &profile)?;

    let ctx = Ctx {
        home: home.clone(),
        workspace: ws.clone(),
        ssh_key: ctx_paths.0.clone(),
        aws_credentials: ctx_paths.1.clone(),
        gh_hosts: ctx_paths.2.clone(),
        dotenv: ctx_paths.3.clone(),
        marker: secret.clone(),
        outside_pid: std::process::id() as i32,
        tcp_port: fixtures.tcp.local_addr()?.port(),
        tcp6_port: fixtures
            .tcp6
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port()),
        udp_port: fixtures.udp.local_addr()?.port(),
        free_port: fixtures.free_port,
        unix_path: root.join("host-service.sock"),
        abstract_name: fixtures.abstract_name.clone(),
        log: log.clone(),
        profile: profile_path.clone(),
    };
    let profile_before = std::fs::read(&profile_path)?;

    let mut command = Command::new(&agentbox);
    command
        .arg("run")
        .arg("--profile")
        .arg(&profile_path)
        .arg("--log")
        .arg(&log)
        .arg("--workspace")
        .arg(&ws)
        .arg("-q")
        .args(opts.best_effort.then_some("--best-effort"))
        .arg("--")
        .arg(&agentbox)
        .args(["selftest", "--attack", spec.name, "--ctx"])
        .arg(serde_json::to_string(&ctx)?)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &home)
        .env("TMPDIR", &tmpdir)
        .env("USER", &user)
        .current_dir(&ws);
    let run = run_with_timeout(command, Duration::from_secs(120))?;

    if run.code == Some(125) && !log.exists() {
        // agentbox refused to start: a guarantee the profile needs is missing here.
        let why = run.stderr.lines().take(3).collect::<Vec<_>>().join(" ");
        return Ok(mk_report(Verdict::NotApplicable(format!(
            "agentbox run refused to start: {why}"
        ))));
    }

    let attempt: Option<Attempt> = run
        .stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(ATTEMPT_PREFIX))
        .and_then(|j| serde_json::from_str(j).ok());

    // Host-side evidence, independent of what the attack claims.
    let mut evidence = fixtures.evidence();
    for (what, path) in [
        (
            "the secret was renamed into the workspace",
            ws.join("stolen-key"),
        ),
        (
            "the secret was hard-linked into the workspace",
            ws.join("linked-key"),
        ),
        ("the .env was renamed", ws.join("app/not-a-secret.txt")),
        ("the .env was hard-linked", ws.join("app/linked-env.txt")),
    ] {
        if path.exists() {
            evidence.push(what.to_string());
        }
    }
    if std::fs::read(&profile_path).ok().as_deref() != Some(&profile_before[..]) {
        evidence.push("the profile file changed".into());
    }
    if !ctx_paths.0.exists() {
        evidence.push("the secret is gone from ~/.ssh".into());
    }

    let verify = agent_sandbox::audit::verify(&log);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let records: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();

    let mut report = mk_report(Verdict::Held);
    report.evidence = evidence.clone();
    let verdict = judge(
        spec,
        attempt.as_ref(),
        &evidence,
        &records,
        &mut report,
        &run,
    );
    report.verdict = match verify {
        Err(e) => Verdict::Failed(format!("the audit log does not verify: {e}")),
        Ok(_) => verdict,
    };
    if report.verdict.is_failure() {
        report.all_denials = denials(&records).cloned().collect();
    }
    report.attempt = attempt;
    drop(scratch);
    Ok(report)
}

fn judge(
    spec: &Spec,
    attempt: Option<&Attempt>,
    evidence: &[String],
    records: &[Value],
    report: &mut Report,
    run: &Run,
) -> Verdict {
    let Some(attempt) = attempt else {
        return Verdict::Failed(format!(
            "the attack reported nothing (agentbox exit {:?}): {}",
            run.code,
            run.stderr.lines().last().unwrap_or("")
        ));
    };
    if let Some(why) = &attempt.not_applicable {
        return Verdict::NotApplicable(why.clone());
    }
    let succeeded = attempt.succeeded || !evidence.is_empty();
    if succeeded {
        let what = attempt
            .detail
            .iter()
            .chain(evidence)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        if let Some(gap) = spec.known_gap {
            return Verdict::KnownGap(format!("{gap} [{what}]"));
        }
        if let Some(g) = spec.guarantee {
            if let Err(reason) = enforced(records, g) {
                return Verdict::NotEnforcedHere(format!("{reason} [{what}]"));
            }
        }
        return Verdict::Failed(format!("the attack worked: {what}"));
    }

    match spec.expect {
        Expect::NoEvent => Verdict::Held,
        Expect::NotLoggedByDesign(why) => Verdict::HeldNotLogged(why.to_string()),
        Expect::Seccomp { syscall, rule } => {
            let matching: Vec<Value> = denials(records)
                .filter(|d| {
                    d["layer"] == "seccomp"
                        && d["object"]["kind"] == "syscall"
                        && d["object"]["name"]
                            .as_str()
                            .is_some_and(|n| n.starts_with(syscall))
                        && d["rule"].as_str().is_some_and(|r| r.contains(rule))
                        && attributed(d)
                })
                .cloned()
                .collect();
            if !matching.is_empty() {
                report.layer = "seccomp".into();
                report.events = matching;
                return Verdict::Held;
            }
            match enforced(records, Guarantee::SyscallDenialsLogged) {
                Ok(()) => Verdict::Failed(format!(
                    "denied ({}), but the log has no seccomp denial of {syscall} with rule \
                     `{rule}`",
                    attempt.detail.join("; ")
                )),
                Err(reason) => Verdict::HeldNotLogged(reason),
            }
        }
        Expect::Kernel { logged_by } => {
            let target = attempt.target.clone().unwrap_or_default();
            let matching: Vec<Value> = denials(records)
                .filter(|d| {
                    let named = names_target(d, &target)
                        || attempt.tried.iter().any(|t| names_target(d, t));
                    named && attributed(d)
                })
                .cloned()
                .collect();
            if let Some(layer) = matching.first().and_then(|d| d["layer"].as_str()) {
                report.layer = layer.to_string();
                report.events = matching;
                return Verdict::Held;
            }
            match logged_by.map(|g| enforced(records, g)) {
                Some(Ok(())) => Verdict::Failed(format!(
                    "denied ({}), but no denial naming {target} is in the log",
                    attempt.detail.join("; ")
                )),
                Some(Err(reason)) => Verdict::HeldNotLogged(reason),
                None => Verdict::HeldNotLogged(format!(
                    "{} denials are reported to the kernel audit log only, not to agentbox's",
                    spec.layer
                )),
            }
        }
        Expect::Flood => judge_flood(attempt, records, report),
    }
}

/// Every denial denied, and every one either logged or counted in a loss record.
fn judge_flood(attempt: &Attempt, records: &[Value], report: &mut Report) -> Verdict {
    let count = |k: &str| {
        attempt
            .counts
            .iter()
            .find(|(n, _)| n == k)
            .map_or(0, |(_, v)| *v)
    };
    let lost: u64 = records
        .iter()
        .filter(|r| r["type"] == "loss")
        .filter_map(|r| r["count"].as_u64())
        .sum();
    let logged_syscalls = denials(records)
        .filter(|d| d["object"]["name"] == "keyctl")
        .count() as u64;
    let target = attempt.target.clone().unwrap_or_default();
    let logged_opens = denials(records)
        .filter(|d| names_target(d, &target))
        .count() as u64;
    report.layer = "seccomp + landlock".into();
    let syscalls = count("syscalls");
    if logged_syscalls + lost < syscalls {
        return Verdict::Failed(format!(
            "silent gap: {syscalls} denied keyctl calls, {logged_syscalls} logged, {lost} \
             counted lost"
        ));
    }
    let opens = count("opens");
    match enforced(records, Guarantee::FsDenialsLogged) {
        Ok(()) if logged_opens + lost < opens => Verdict::Failed(format!(
            "silent gap: {opens} denied opens, {logged_opens} logged, {lost} counted lost"
        )),
        Ok(()) => Verdict::Held,
        Err(reason) => Verdict::HeldNotLogged(format!(
            "all {syscalls} syscall denials logged ({lost} lost, counted); the {opens} denied \
             opens are not: {reason}"
        )),
    }
}

/// Plain-text table: technique | layer | result (reason).
pub fn render_table(reports: &[Report]) -> String {
    // Attack details can be long (a 4000-byte path): the table shows the start.
    let short = |s: &str| -> String {
        if s.chars().count() > 240 {
            format!("{}…", s.chars().take(240).collect::<String>())
        } else {
            s.to_string()
        }
    };
    let tw = reports
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(9)
        .max(9);
    let lw = reports
        .iter()
        .map(|r| r.layer.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!("{:<tw$}  {:<lw$}  result\n", "technique", "layer");
    for r in reports {
        let reason = r
            .verdict
            .reason()
            .map(|s| format!(": {}", short(s)))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<tw$}  {:<lw$}  {}{}\n",
            r.name,
            r.layer,
            r.verdict.label(),
            reason
        ));
    }
    out.push_str(&summary(reports));
    out
}

/// `N held, N held-not-logged, ...` with the exit decision.
pub fn summary(reports: &[Report]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for r in reports {
        let l = r.verdict.label();
        match counts.iter_mut().find(|(n, _)| *n == l) {
            Some(c) => c.1 += 1,
            None => counts.push((l, 1)),
        }
    }
    let parts: Vec<String> = counts.iter().map(|(l, n)| format!("{n} {l}")).collect();
    let failed = reports.iter().filter(|r| r.verdict.is_failure()).count();
    // The attacks that worked here, by name: a summary never reads "all held" over them.
    let open: Vec<&str> = reports
        .iter()
        .filter(|r| {
            matches!(
                r.verdict,
                Verdict::KnownGap(_) | Verdict::NotEnforcedHere(_)
            )
        })
        .map(|r| r.name.as_str())
        .collect();
    let verdict = if failed > 0 {
        "SOME GUARANTEES FAILED.".to_string()
    } else if open.is_empty() {
        "Every technique was stopped.".to_string()
    } else {
        format!(
            "No enforced guarantee failed, but these attacks WORKED here (known gaps, or \
             guarantees this machine lacks): {}.",
            open.join(", ")
        )
    };
    format!(
        "\n{} techniques: {}. {verdict}\n",
        reports.len(),
        parts.join(", ")
    )
}

/// Markdown table for docs/security.md.
pub fn render_markdown(reports: &[Report], kernel: &str) -> String {
    let mut out = format!(
        "| technique | family | layer that stops it | result on {kernel} |\n| --- | --- | --- | --- |\n"
    );
    for r in reports {
        let reason = r
            .verdict
            .reason()
            .map(|s| {
                let s: String = s.chars().take(300).collect();
                format!(": {}", s.replace('|', "\\|").replace('\n', " "))
            })
            .unwrap_or_default();
        out.push_str(&format!(
            "| {} | {} | {} | {}{} |\n",
            r.technique.replace('|', "\\|"),
            r.family,
            r.layer,
            r.verdict.label(),
            reason
        ));
    }
    out
}
