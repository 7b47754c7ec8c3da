//! `agentbox run`: profile → policy (+ command-line overrides) → plan → fail-closed check →
//! sandbox → exit code.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::time::Duration;

use anyhow::{anyhow, Context};

use agent_sandbox::audit::{self, AuditLog, JournalSink, TerminalSink};
use agent_sandbox::profile::{self, LoadOptions};
use agent_sandbox::Plan;
use agent_sandbox::{Isolation, LaunchOptions, PrivateTmp, Sandbox};

const AFTER_HELP: &str = "\
Examples:
  agentbox run -- python3 agent.py
      the built-in `default` profile: workspace (the current directory) read-write, system
      read-only, no home directory, no network, secrets and secret variables denied
  agentbox run --profile strict --workspace ~/src/app -- ./agent
  agentbox run --allow-read ~/datasets --allow-net '*:443' -- python3 agent.py
  agentbox run --profile ./my-profile.toml --log run.jsonl -- sh -c 'make test'

Fail closed: when this kernel or these privileges cannot enforce a guarantee the profile
needs (`agentbox doctor` lists them), agentbox refuses to start the command. --best-effort
starts it anyway with what can be enforced, prints what is NOT enforced before the command
starts, and records it in the audit log's launch record.

Audit log: every denial is one line of a hash-chained JSON Lines file, by default
${XDG_STATE_HOME:-~/.local/state}/agentbox/logs/<sandbox-id>.jsonl (named in the summary).
Check it with `agentbox audit verify FILE`.

Exit status:
  N        the command's own exit status
  128+N    the command was killed by signal N (143: SIGTERM, 137: SIGKILL)
  125      agentbox itself failed (bad profile, missing guarantee, setup error)
  126      the command was found but could not be executed
  127      the command was not found
  121      --fail-on-denial: the command exited 0, but a denial was logged

CI: --report junit:FILE, --report sarif:FILE, --report markdown:FILE write reports from the
audit log when the run ends (docs/ci.md). On GitHub Actions (GITHUB_ACTIONS set) the Markdown
summary is appended to $GITHUB_STEP_SUMMARY, each denied rule becomes an ::error annotation,
and the log's path is the step output `agentbox-log`.";

/// Run a command inside a sandbox.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct RunArgs {
    /// Profile: a built-in name (default, offline, python, node, rust, go, ci, strict) or a TOML
    /// file.
    #[arg(long, short = 'p', value_name = "NAME|FILE", default_value = "default")]
    pub profile: String,

    /// Also allow reading (and listing) this tree. Repeatable.
    #[arg(long = "allow-read", value_name = "PATH")]
    pub allow_read: Vec<PathBuf>,

    /// Also allow reading and writing this tree. Repeatable.
    #[arg(long = "allow-write", value_name = "PATH")]
    pub allow_write: Vec<PathBuf>,

    /// Also allow running programs from this tree (it stays as readable as before: add
    /// --allow-read or --allow-write for that). Repeatable.
    #[arg(long = "allow-exec", value_name = "PATH")]
    pub allow_exec: Vec<PathBuf>,

    /// Also allow binding (listening on) this port or range, e.g. `8000`, `8000-8100`.
    /// Repeatable.
    #[arg(long = "allow-bind", value_name = "PORTS")]
    pub allow_bind: Vec<String>,
    /// Let the agent connect to this UNIX socket (a path or glob: `"$SSH_AUTH_SOCK"`,
    /// `/run/user/*/bus`). Sockets inside the write trees need no flag. Repeatable.
    #[arg(long = "allow-unix", value_name = "SOCKET")]
    pub allow_unix: Vec<String>,

    /// Keep this environment variable although the profile scrubs it (a name, or a glob such
    /// as `NPM_CONFIG_*`). Repeatable.
    #[arg(long = "keep-env", value_name = "NAME")]
    pub keep_env: Vec<String>,

    /// Also allow outgoing connections to `host-or-cidr:port-or-range`, e.g. `*:443`,
    /// `10.0.0.0/8:*`, `[::1]:8000-8100`, `localhost:3000`, or to a host name:
    /// `pypi.org:443`, `*.githubusercontent.com:443`, `api.example.com:443/udp` (agentbox
    /// then answers the agent's DNS and opens only the addresses it hands out). Repeatable.
    #[arg(long = "allow-net", value_name = "ENTRY")]
    pub allow_net: Vec<String>,

    /// The resolver host names are looked up at (`IP:PORT`); default: the profile's
    /// `dns_upstream`, else the host's first nameserver.
    #[arg(long = "dns-upstream", value_name = "IP:PORT")]
    pub dns_upstream: Option<std::net::SocketAddr>,

    /// Hold what the profile neither allows nor denies until an approver decides, instead of
    /// refusing it: `net` (connections; `[network] unknown = "ask"`), `fs` (reads of files no
    /// tree allows; `[filesystem] unknown = "ask"`), `exec` (running a readable file outside
    /// the exec trees; `[filesystem] exec_unknown = "ask"`, needs BPF LSM), or several
    /// (`--ask net,fs`).
    #[arg(long = "ask", value_name = "AREAS", value_delimiter = ',')]
    pub ask: Vec<String>,

    /// Who decides what is asked: `tty` (a prompt on your terminal, whatever the agent's
    /// stdio is), `socket` (JSON lines on a UNIX socket next to the audit log, for an IDE or
    /// agent front end), `socket:PATH`, `rules:FILE` (a policy file of rules, for unattended
    /// runs), `webhook:https://…` (a signed HTTPS POST per request, for chat-ops; needs
    /// --webhook-key), or `deny` (non-interactive: refuse and report). Several joined by
    /// commas ask in turn until one decides (`rules:ci.toml,tty`); led by `all:`, every one
    /// must allow. Prompts are limited to 10 a minute; beyond that requests are refused.
    #[arg(long = "approver", value_name = "BACKEND", default_value = "deny")]
    pub approver: String,

    /// The key webhook requests are signed with (HMAC-SHA256, header X-Agentbox-Signature),
    /// shared with the receiver; mode 0600, outside every tree of the sandbox.
    #[arg(long = "webhook-key", value_name = "FILE")]
    pub webhook_key: Option<PathBuf>,

    /// PEM certificates to trust for the webhook instead of the public roots (a receiver
    /// with a private CA).
    #[arg(long = "webhook-ca", value_name = "FILE")]
    pub webhook_ca: Option<PathBuf>,

    /// Seconds the approver has per request; then the request is refused.
    #[arg(long = "ask-timeout", value_name = "SECS", default_value_t = 60)]
    pub ask_timeout: u64,

    /// Start even if some guarantee the profile needs cannot be enforced here; what is missing
    /// is printed before the command starts and recorded in the audit log.
    #[arg(long)]
    pub best_effort: bool,

    /// Write the audit log to FILE (must not exist yet) instead of the per-run default.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,

    /// `ocsf`: also stream every event as OCSF 1.1 (one JSON object per line, live) to the
    /// log's name with `.ocsf.jsonl`, for a SIEM agent to tail. The hash-chained log is
    /// written either way and stays the record.
    #[arg(long, value_name = "FORMAT", default_value = "jsonl", value_parser = ["jsonl", "ocsf"])]
    pub log_format: String,

    /// No live denial lines and no summary on stderr (the audit log is still written).
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// Send launch, denials, losses, anomalies and exit to the systemd journal as structured
    /// entries (MESSAGE_ID, AGENTBOX_LAYER, AGENTBOX_RULE, ...), instead of live lines on
    /// stderr. On by itself when stderr is the journal (a service: JOURNAL_STREAM).
    #[arg(long)]
    pub journal: bool,

    /// Under systemd (Type=notify, $NOTIFY_SOCKET set): who says READY=1. `launch`: agentbox,
    /// once the agent runs; `agent`: the agent, through its own $NOTIFY_SOCKET (sd_notify).
    /// Either way the agent's STATUS=, WATCHDOG=1, RELOADING=1 and STOPPING=1 reach systemd;
    /// MAINPID= and FDSTORE= never do.
    #[arg(long, value_name = "WHO", default_value = "launch", value_parser = ["launch", "agent"])]
    pub sd_notify: String,

    /// The workspace (`${WORKSPACE}` in profiles). Default: the current directory.
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,

    /// Use DIR as the agent's temporary directory (`${TMPDIR}` in profiles, and its TMPDIR),
    /// shared and kept. Default: a private directory `$TMPDIR/agentbox-<sandbox id>` (mode
    /// 0700), removed with everything in it when the sandbox ends.
    #[arg(long, value_name = "DIR")]
    pub tmpdir: Option<PathBuf>,

    /// Write a report when the run ends: `junit:FILE`, `sarif:FILE`, `markdown:FILE`, or
    /// `ocsf:FILE` (OCSF 1.1 events, one per line, for a SIEM). Repeatable.
    #[arg(long, value_name = "KIND:FILE")]
    pub report: Vec<String>,

    /// Exit 121 when the command exited 0 but something was denied (the tool under test may
    /// have swallowed the error). `--fail-on-denial=landlock,cgroup-bpf` counts those layers
    /// only.
    #[arg(long, value_name = "LAYERS", num_args = 0..=1, default_missing_value = "all")]
    pub fail_on_denial: Option<String>,

    /// Run the agent as this user (a name or uid), keeping the layers only root can build
    /// (needs root). Through sudo the default is the user who ran sudo, with that user's
    /// HOME, as `sudo -u` would; `--user root` keeps root.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// The user the agent runs as, when not agentbox's own: `--user`, else (as root, through
/// sudo) the invoking user.
fn agent_user(args: &RunArgs) -> anyhow::Result<Option<agent_sandbox::policy::UserIdentity>> {
    use nix::unistd::{Uid, User};
    let root = Uid::effective().is_root();
    let wanted = match &args.user {
        Some(u) if !root => anyhow::bail!(
            "--user {u}: only a root agentbox can run the agent as another user (the agent \
             already runs as you)"
        ),
        Some(u) => Some(u.clone()),
        None if root => std::env::var("SUDO_UID").ok().filter(|uid| uid != "0"),
        None => None,
    };
    let Some(wanted) = wanted else {
        return Ok(None);
    };
    let found = match wanted.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(&wanted),
    }
    .with_context(|| format!("looking up user {wanted}"))?;
    let Some(user) = found else {
        anyhow::bail!("--user {wanted}: no such user (a name or uid from the passwd database)");
    };
    if user.uid.is_root() {
        return Ok(None);
    }
    let name = std::ffi::CString::new(user.name.clone()).context("user name")?;
    let groups = nix::unistd::getgrouplist(&name, user.gid)
        .with_context(|| format!("groups of {}", user.name))?
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    Ok(Some(agent_sandbox::policy::UserIdentity {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups,
        home: user.dir,
    }))
}

/// Whether a profile's env glob (`*_TOKEN`, `AWS_*`) matches `name`, or names it outright.
fn env_glob_matches(glob: &str, name: &str) -> bool {
    glob == name
        || globset::Glob::new(glob)
            .map(|g| g.compile_matcher().is_match(name))
            .unwrap_or(false)
}

fn chown(path: &Path, user: &agent_sandbox::policy::UserIdentity) -> anyhow::Result<()> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
        .with_context(|| format!("chown {} to {}", path.display(), user.name))
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("cannot make {} absolute", p.display()))
}

/// `${XDG_STATE_HOME:-$HOME/.local/state}/agentbox/logs/<id>.jsonl`
///
/// Services often have no usable HOME (`User=nobody`, `DynamicUser=`, HOME=/nonexistent):
/// systemd's `$STATE_DIRECTORY` comes first, and without a HOME that exists, root's logs go to
/// /var/lib/agentbox and anyone else's to a 0700 directory of their own under /tmp.
/// Where `agentbox run` writes its logs by default (for `agentbox gc`).
pub(crate) fn default_log_dir() -> PathBuf {
    let home = LoadOptions::from_env().map(|o| o.home).unwrap_or_default();
    default_log_path(&home, "x")
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn default_log_path(home: &Path, sandbox: &str) -> PathBuf {
    let var = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let logs = if let Some(state) = var("STATE_DIRECTORY") {
        // systemd may list several, separated by colons: the first is this unit's.
        let first = state.to_string_lossy().split(':').next().map(PathBuf::from);
        first.unwrap_or(state).join("logs")
    } else if let Some(state) = var("XDG_STATE_HOME") {
        state.join("agentbox/logs")
    } else if home.is_dir() {
        home.join(".local/state/agentbox/logs")
    } else if nix::unistd::geteuid().is_root() {
        PathBuf::from("/var/lib/agentbox/logs")
    } else {
        PathBuf::from(format!("/tmp/agentbox-{}/logs", nix::unistd::geteuid()))
    };
    logs.join(format!("{sandbox}.jsonl"))
}

/// The /tmp fallback of `default_log_path` is a name anyone could take first: it must be a
/// real directory of ours, closed to others, or the log does not go there.
fn check_shared_tmp_log_dir(log: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Some(dir) = log.parent().and_then(Path::parent) else {
        return Ok(());
    };
    if dir != Path::new(&format!("/tmp/agentbox-{}", nix::unistd::geteuid())) {
        return Ok(());
    }
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("checking {}", dir.display())),
        Ok(m)
            if m.is_dir()
                && m.uid() == nix::unistd::geteuid().as_raw()
                && m.mode() & 0o077 == 0 =>
        {
            Ok(())
        }
        Ok(_) => anyhow::bail!(
            "{} is not a private directory of this user (someone else may have created it); \
             choose the log with --log FILE, or set XDG_STATE_HOME",
            dir.display()
        ),
    }
}

/// A profile given as a file (same rule as `profile::load`), for protection from the agent.
fn profile_file(spec: &str) -> Option<PathBuf> {
    let is_file = spec.contains('/') || spec.ends_with(".toml");
    is_file.then(|| {
        std::fs::canonicalize(spec)
            .or_else(|_| absolute(Path::new(spec)).map_err(|_| ()))
            .ok()
    })?
}

fn errno_text(errno: i32) -> String {
    let s = std::io::Error::from_raw_os_error(errno).to_string();
    s.split(" (os error").next().unwrap_or(&s).to_string()
}

pub(crate) fn exec(args: RunArgs) -> anyhow::Result<ExitCode> {
    // `AGENTBOX_LOG=debug` (an env-filter): diagnostics on stderr, e.g. whether the eBPF
    // programs were loaded now (cold) or reopened from their pins (warm).
    if let Some(filter) = std::env::var_os("AGENTBOX_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter.to_string_lossy()))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let started = std::time::Instant::now();
    // As root, the eBPF runtime opens on a second core while the profile loads.
    Plan::prefetch();
    let mut opts = LoadOptions::from_env()?;
    if let Some(ws) = &args.workspace {
        opts.workspace = absolute(ws)?;
    }
    // Logs stay where agentbox's own user keeps them (out of the agent user's reach).
    let log_home = opts.home.clone();
    let user = agent_user(&args)?;
    if let Some(u) = &user {
        opts.home = u.home.clone();
        opts.user = u.name.clone();
        if !args.quiet {
            eprintln!(
                "agentbox: the agent runs as {} (uid {}){}; --user root keeps root",
                u.name,
                u.uid,
                if args.user.is_none() {
                    ", who ran sudo"
                } else {
                    ""
                }
            );
        }
    }
    let sandbox_id = audit::new_sandbox_id();
    // Created before the profile's variables are expanded: `${TMPDIR}` names it. Dropped
    // (removed) on every way out of this function, after the sandbox is torn down.
    // What killed runs left behind: their private TMPDIRs (root: cgroups and map entries are
    // reclaimed when this run's group is made).
    for dead in agent_sandbox::gc::reclaim_tmpdirs(&opts.tmpdir) {
        tracing::info!("removed the TMPDIR of a dead run: {}", dead.display());
    }
    let private_tmp = match &args.tmpdir {
        Some(dir) => {
            opts.tmpdir = absolute(dir)?;
            None
        }
        None => {
            let tmp = PrivateTmp::create(&opts.tmpdir, &sandbox_id)?;
            if let Some(u) = &user {
                chown(tmp.path(), u)?;
            }
            opts.tmpdir = tmp.path().to_path_buf();
            Some(tmp)
        }
    };
    let mut policy = profile::load(&args.profile, &opts).map_err(|e| anyhow!("{e}"))?;
    // systemd's notification socket is agentbox's to answer (it is the unit's main process):
    // the agent does not get it.
    let notify_socket = std::env::var("NOTIFY_SOCKET")
        .ok()
        .filter(|s| !s.is_empty());
    if notify_socket.is_some() {
        policy.process.env_deny.push("NOTIFY_SOCKET".into());
    }
    policy
        .process
        .env_set
        .entry("TMPDIR".into())
        .or_insert_with(|| opts.tmpdir.to_string_lossy().into_owned());
    if let Some(u) = &user {
        let env = &mut policy.process.env_set;
        env.insert("HOME".into(), u.home.to_string_lossy().into_owned());
        env.insert("USER".into(), u.name.clone());
        env.insert("LOGNAME".into(), u.name.clone());
        policy.process.user = Some(u.clone());
    }
    for p in &args.allow_read {
        policy.filesystem.read.push(absolute(p)?);
    }
    for p in &args.allow_write {
        policy.filesystem.write.push(absolute(p)?);
    }
    for p in &args.allow_exec {
        policy.filesystem.exec.push(absolute(p)?);
    }
    for entry in &args.allow_net {
        if profile::is_domain_entry(entry) {
            let rule = profile::parse_domain_entry(entry)
                .map_err(|e| anyhow!("--allow-net {entry}: {e}"))?;
            if !policy.network.domains.contains(&rule) {
                policy.network.domains.push(rule);
            }
            continue;
        }
        let rules =
            profile::parse_net_entry(entry).map_err(|e| anyhow!("--allow-net {entry}: {e}"))?;
        policy.network.allow.extend(rules);
    }
    if let Some(up) = args.dns_upstream {
        policy.network.dns_upstream = Some(up);
    }
    for area in &args.ask {
        match area.as_str() {
            "net" => policy.network.unknown = agent_sandbox::policy::Unknown::Ask,
            "fs" => policy.filesystem.unknown = agent_sandbox::policy::Unknown::Ask,
            "exec" => policy.filesystem.exec_unknown = agent_sandbox::policy::Unknown::Ask,
            other => anyhow::bail!("--ask {other}: unknown area; write `net`, `fs` or `exec`"),
        }
    }
    for entry in &args.allow_bind {
        let ports = profile::parse_port_range(entry).map_err(|e| {
            anyhow!("--allow-bind {entry}: {e} (a port like 8000, or a range like 8000-8100)")
        })?;
        policy.network.bind.push(ports);
    }
    for entry in &args.allow_unix {
        let socket = absolute(std::path::Path::new(entry))?;
        policy
            .network
            .unix
            .push(socket.to_string_lossy().into_owned());
    }
    // The name itself is kept; globs that would scrub it stop at it.
    for name in &args.keep_env {
        policy
            .process
            .env_deny
            .retain(|glob| !env_glob_matches(glob, name));
        if !policy.process.env_allow.is_empty() {
            policy.process.env_allow.push(name.clone());
        }
    }
    // Toolchains installed per user that the agent's PATH resolves into (a pyenv shim, a
    // rustup proxy): read and exec on their roots, named once.
    let env_of = |name: &str| {
        policy
            .process
            .env_set
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    };
    let toolchains = profile::toolchain_roots(&opts.home, env_of);
    let fs = &mut policy.filesystem;
    let new: Vec<PathBuf> = toolchains
        .into_iter()
        .filter(|root| !fs.exec.iter().any(|e| root.starts_with(e)))
        .collect();
    if !new.is_empty() && !args.quiet {
        let names: Vec<String> = new.iter().map(|p| p.display().to_string()).collect();
        eprintln!(
            "agentbox: toolchains on PATH granted read and exec: {}",
            names.join(", ")
        );
    }
    for root in new {
        fs.read.push(root.clone());
        fs.exec.push(root);
    }
    // Write trees that do not exist yet (`~/.npm`, `~/.cache/pip` on a new machine) would be
    // dropped without a word: under HOME, the workspace or TMPDIR they are created (what the
    // tool would do), anywhere else the run says it skipped them.
    for path in &policy.filesystem.write {
        if path.exists() {
            continue;
        }
        let ours = [&opts.home, &opts.workspace, &opts.tmpdir]
            .iter()
            .any(|base| path.starts_with(base) && base.is_dir());
        let missing: Vec<PathBuf> = path
            .ancestors()
            .take_while(|d| !d.exists())
            .map(Path::to_path_buf)
            .collect();
        let created = ours
            && std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .is_ok();
        // Made for the agent's user, not for root: every directory this created.
        if let (true, Some(u)) = (created, &user) {
            for dir in &missing {
                chown(dir, u)?;
            }
        }
        if !created && !args.quiet {
            eprintln!(
                "agentbox: write path {} does not exist; skipped (create it, or drop it from \
                 the profile)",
                path.display()
            );
        }
    }
    // A profile that opens the network must also open name resolution, or every tool hangs
    // in its resolver (npm: 70 s, then EAI_AGAIN): the configured nameservers, port 53, TCP
    // and UDP, and nothing else (loopback stubs such as systemd-resolved's included, by an
    // exact rule that beats the loopback deny).
    // With host-name rules every lookup goes to agentbox's resolver instead (layers/dns).
    if !policy.network.allow.is_empty() && policy.network.domains.is_empty() {
        policy.network.allow.extend(profile::resolver_rules());
    }
    if let Some(log) = &args.log {
        policy.audit.log = Some(absolute(log)?);
    }

    let (log_path, own_log_dir) = match &policy.audit.log {
        Some(p) => (p.clone(), false),
        None => (default_log_path(&log_home, &sandbox_id), true),
    };
    check_shared_tmp_log_dir(&log_path)?;
    // The default log directory holds every earlier run's log too: none of them is the
    // agent's to append to or truncate, whatever its write trees say. A --log file is
    // protected alone (its directory may be anything).
    let mut protected = match log_path.parent() {
        Some(dir) if own_log_dir => vec![dir.to_path_buf()],
        _ => vec![log_path.clone()],
    };
    protected.extend(profile_file(&args.profile));
    // Created before the plan: a protected file must exist to be bound read-only.
    let ocsf = match args.log_format.as_str() {
        "ocsf" => {
            let path = audit::report::ocsf_path(&log_path);
            let sink = audit::report::OcsfSink::create(&path)
                .with_context(|| format!("--log-format ocsf: creating {}", path.display()))?;
            if !own_log_dir {
                protected.push(path);
            }
            Some(sink)
        }
        _ => None,
    };

    let mut log = AuditLog::create(&log_path, &sandbox_id)?;
    if let Some(sink) = ocsf {
        log.add_sink(Box::new(sink));
    }
    // Until the Launch record is in, a failure leaves nothing worth keeping: remove the
    // empty file rather than litter the log directory with records of runs that never began.
    let discard = |e: anyhow::Error| {
        let _ = std::fs::remove_file(&log_path);
        if args.log_format == "ocsf" {
            let _ = std::fs::remove_file(audit::report::ocsf_path(&log_path));
        }
        e
    };

    tracing::debug!(elapsed = ?started.elapsed(), "profile loaded, audit log created");
    let plan = Plan::build(policy, &protected).map_err(discard)?;
    tracing::debug!(elapsed = ?started.elapsed(), "plan built");
    let gaps = plan.check(args.best_effort).map_err(discard)?;
    if plan.asks() {
        let backend = agent_sandbox::approval::Backend::parse(
            &args.approver,
            &log_path.with_extension("approve.sock"),
        )
        .and_then(|b| {
            b.with_webhook(
                args.webhook_key.as_deref(),
                args.webhook_ca.as_deref(),
                &sandbox_id,
            )
        })
        .map_err(discard)?;
        let shown = backend.clone();
        // Kept with agentbox's own user, like the logs: never where the agent user writes.
        plan.set_workspace_approvals(agent_sandbox::approval::WorkspaceApprovals::for_workspace(
            &log_home,
            &opts.workspace,
        ));
        let socket = plan
            .set_approver(backend, std::time::Duration::from_secs(args.ask_timeout))
            .map_err(discard)?;
        use agent_sandbox::approval::Backend;
        match (socket, shown) {
            (Some(path), _) => eprintln!(
                "agentbox: approvals: connect to {} (JSON lines, docs/approvals.md); {}s per \
                 request, then refused",
                path.display(),
                args.ask_timeout
            ),
            (None, Backend::Deny) if !args.quiet => eprintln!(
                "agentbox: unknown = ask, approver `deny`: every unknown destination is \
                 refused and logged (--approver socket to decide them)"
            ),
            (None, Backend::Rules(_) | Backend::Webhook { .. } | Backend::Chain { .. })
                if !args.quiet =>
            {
                eprintln!(
                    "agentbox: approvals decided by --approver {}; a request nothing decides \
                     is refused and logged",
                    args.approver
                )
            }
            _ => {}
        }
    }
    if !gaps.is_empty() {
        eprintln!("agentbox: --best-effort: starting WITHOUT these guarantees:");
        for (g, reason) in &gaps {
            eprintln!("agentbox:   - {}: {reason}", g.describe());
        }
    }
    if !args.quiet {
        let mut scrubbed = plan.scrubbed_env();
        // systemd's socket is replaced by the agent's own (sd_notify passthrough), not lost.
        scrubbed.retain(|name| name != "NOTIFY_SOCKET");
        if !scrubbed.is_empty() {
            eprintln!(
                "agentbox: not passed to the agent (profile env rules): {}; --keep-env NAME keeps one",
                scrubbed.join(", ")
            );
        }
        for (g, _) in plan.caveats() {
            eprintln!(
                "agentbox: note: {} is held by the supervisor here (unprivileged), except \
                 against a thread racing its check (sendmsg datagrams, abstract-socket \
                 connects); as root, cgroup-BPF holds it fully (`agentbox doctor`)",
                g.describe()
            );
        }
    }
    // Live lines wait for the agent to end its line where agentbox can see its output.
    let mut relay = match (args.quiet, agent_sandbox::OutputRelay::prepare()) {
        (true, _) => None,
        (false, Ok(relay)) => relay,
        (false, Err(e)) => {
            tracing::warn!("no output relay, live lines may split the agent's: {e}");
            None
        }
    };
    // Under journald (a service), structured entries replace the live lines it would get.
    let journal = if args.journal || JournalSink::stderr_is_journal() {
        let socket = std::env::var_os("AGENTBOX_JOURNAL_SOCKET")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(agent_sandbox::audit::journal::DEFAULT_SOCKET));
        match JournalSink::connect(&socket) {
            Ok(sink) => Some(sink),
            Err(e) if args.journal => {
                return Err(anyhow!(
                    "--journal: cannot reach the journal at {}: {e}",
                    socket.display()
                ))
            }
            Err(e) => {
                eprintln!(
                    "agentbox: warning: stderr is the journal, but its socket {} is not                      reachable ({e}): live lines instead",
                    socket.display()
                );
                None
            }
        }
    } else {
        None
    };
    if let Some(journal) = journal {
        log.add_sink(Box::new(journal));
    } else if !args.quiet {
        log.add_sink(Box::new(match &relay {
            Some(relay) => TerminalSink::new(Box::new(relay.writer()), false),
            None => TerminalSink::stderr(),
        }));
    }

    let launch = LaunchOptions {
        command: args.command.clone(),
        best_effort: args.best_effort,
        notify: notify_socket
            .clone()
            .map(|socket| agent_sandbox::NotifyRelay {
                socket,
                agent_ready: args.sd_notify == "agent",
            }),
    };
    if let Some(relay) = &relay {
        relay
            .redirect()
            .context("pointing the agent's output at the relay")?;
    }
    let launched = Sandbox::launch(plan, log, launch);
    if let Some(relay) = &mut relay {
        relay.start().context("starting the output relay")?;
    }
    let sandbox = launched.map_err(discard)?;
    tracing::debug!(elapsed = ?started.elapsed(), "agent released");
    if let Some(socket) = notify_socket
        .as_ref()
        .filter(|_| args.sd_notify == "launch")
    {
        // Type=notify: the service is ready once the agent runs (agentbox is the main pid).
        if let Err(e) = agent_sandbox::sd_notify(
            socket,
            format!("READY=1\nMAINPID={}\n", std::process::id()).as_bytes(),
        ) {
            eprintln!("agentbox: warning: sd_notify READY=1 to {socket}: {e}");
        }
    }
    if let Isolation::Subreaper { reason } = sandbox.isolation() {
        eprintln!(
            "agentbox: warning: {reason}; the agent's process tree is contained by a subreaper \
             and its process group only (descendants that start a new session can outlive it)"
        );
    }
    let outcome = sandbox.wait()?;
    if let Some(relay) = relay {
        relay.finish(Duration::from_secs(2));
    }
    // The default log directory keeps the newest logs only (`agentbox gc --help`).
    if own_log_dir {
        if let Some(dir) = log_path.parent() {
            let pruned =
                agent_sandbox::gc::prune_logs_if_due(dir, crate::gc_cmd::retention(None, None));
            tracing::debug!(count = pruned.len(), "pruned old audit logs");
        }
    }
    tracing::debug!(elapsed = ?started.elapsed(), "sandbox torn down");
    if let Some(tmp) = private_tmp {
        if let Err(e) = tmp.remove() {
            eprintln!("agentbox: warning: {e:#}");
        }
    }
    if let Some(errno) = outcome.exec_error {
        eprintln!(
            "agentbox: cannot run '{}': {}",
            args.command[0],
            errno_text(errno)
        );
    }
    if !args.quiet {
        eprintln!("{}", outcome.summary);
    }
    let run = ci_reports(&args, &log_path, &opts.workspace)?;
    let denied = |layers: &str| {
        run.rules
            .iter()
            .filter(|r| r.enforced)
            .filter(|r| layers == "all" || layers.split(',').any(|l| l.trim() == r.layer))
            .map(|r| r.count)
            .sum::<u64>()
    };
    if let Some(layers) = &args.fail_on_denial {
        let n = denied(layers);
        if outcome.exit_code() == 0 && n > 0 {
            eprintln!("agentbox: --fail-on-denial: {n} denial(s); exit 121");
            return Ok(ExitCode::from(FAIL_ON_DENIAL));
        }
    }
    Ok(ExitCode::from(outcome.exit_code()))
}

/// `--fail-on-denial`'s exit status (documented in `run --help`).
const FAIL_ON_DENIAL: u8 = 121;

/// The `--report` files and, on GitHub Actions, the job summary, annotations and step
/// output, all from the finished log.
fn ci_reports(
    args: &RunArgs,
    log: &Path,
    workspace: &Path,
) -> anyhow::Result<audit::report::RunSummary> {
    let records: Vec<audit::Record> = std::fs::read_to_string(log)
        .with_context(|| format!("reading {}", log.display()))?
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let run = audit::report::RunSummary::from_records(&records);
    for spec in &args.report {
        let (kind, file) = spec.split_once(':').with_context(|| {
            format!("--report {spec}: write KIND:FILE (junit, sarif, markdown)")
        })?;
        let text = match kind {
            "junit" => audit::report::junit(&run),
            "sarif" => audit::report::sarif(&run, workspace),
            "markdown" | "md" => audit::report::markdown(&run, log),
            "ocsf" => audit::report::ocsf(&records),
            other => anyhow::bail!(
                "--report {spec}: unknown kind `{other}` (junit, sarif, markdown or ocsf)"
            ),
        };
        std::fs::write(file, text).with_context(|| format!("--report: writing {file}"))?;
    }
    if std::env::var_os("GITHUB_ACTIONS").is_some_and(|v| v == "true") {
        github_actions(&run, log)?;
    }
    Ok(run)
}

/// GitHub Actions: the summary, one `::error` per denied rule, the log path as an output.
fn github_actions(run: &audit::report::RunSummary, log: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    let append = |var: &str, text: &str| -> anyhow::Result<()> {
        if let Some(path) = std::env::var_os(var) {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&path)
                .with_context(|| format!("opening ${var}"))?;
            f.write_all(text.as_bytes())?;
        }
        Ok(())
    };
    append("GITHUB_STEP_SUMMARY", &audit::report::markdown(run, log))?;
    append(
        "GITHUB_OUTPUT",
        &format!(
            "agentbox-log={}
",
            log.display()
        ),
    )?;
    // Workflow commands: `%`, CR and LF must be escaped in the message.
    let escape = |s: &str| {
        s.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    };
    for r in run.rules.iter().filter(|r| r.enforced) {
        println!(
            "::error title=agentbox {} denial::{} x{}: {}",
            escape(&r.layer),
            escape(&r.rule),
            r.count,
            escape(&r.objects.join("; "))
        );
    }
    Ok(())
}
