//! `agentbox systemd`: units that run a command through agentbox, and drop-ins that put an
//! existing unit's ExecStart under it. The directives and why: docs/systemd.md.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

/// Generate systemd units (or drop-ins) that run commands under agentbox.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum SystemdCmd {
    /// Print a service unit running CMD under agentbox (Type=notify: agentbox reports
    /// readiness once the agent is launched).
    #[command(after_help = "Examples:\n  \
      agentbox systemd unit --name triage-bot --profile python -- /srv/bot/run.py\n  \
      agentbox systemd unit --name triage-bot --install -- /srv/bot/run.py   # then: systemctl daemon-reload")]
    Unit {
        /// The unit's name (`NAME.service`).
        #[arg(long)]
        name: String,
        /// The agentbox profile.
        #[arg(long, short = 'p', default_value = "default")]
        profile: String,
        /// A user unit (`systemctl --user`): agentbox runs unprivileged.
        #[arg(long)]
        user: bool,
        /// The agent's workspace (its WorkingDirectory, writable). Default: the state
        /// directory systemd creates for the unit.
        #[arg(long, value_name = "DIR")]
        workspace: Option<PathBuf>,
        /// Write it to /etc/systemd/system (or ~/.config/systemd/user with --user).
        #[arg(long)]
        install: bool,
        /// Who says READY=1 (`agentbox run --sd-notify`): `agent` for an agent that speaks
        /// sd_notify itself; by default agentbox, once the agent runs.
        #[arg(long, value_name = "WHO", value_parser = ["launch", "agent"])]
        sd_notify: Option<String>,
        /// Start even where a guarantee the profile needs is missing (`agentbox run
        /// --best-effort`); the launch record says what is.
        #[arg(long)]
        best_effort: bool,
        /// The command, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Print a drop-in that runs an existing unit's ExecStart under agentbox.
    #[command(after_help = "Examples:\n  \
      agentbox systemd wrap nginx.service --profile strict\n  \
      agentbox systemd wrap my-agent.service --install   # then: systemctl daemon-reload")]
    Wrap {
        /// The unit to wrap: a name (found in the systemd unit directories) or a unit file.
        unit: String,
        #[arg(long, short = 'p', default_value = "default")]
        profile: String,
        /// Write it to /etc/systemd/system/UNIT.d/agentbox.conf.
        #[arg(long)]
        install: bool,
    },
}

/// Directives that complement agentbox's layers: they narrow what agentbox itself (root, to
/// build the sandbox) can touch, and none takes away what it needs (namespaces, mounts, bpf,
/// cgroups, ptrace of its own children). docs/systemd.md gives the reason for each, and for
/// the ones left out.
const HARDENING: &[&str] = &[
    "NoNewPrivileges=yes",
    "PrivateTmp=yes",
    "ProtectSystem=full",
    "ProtectHome=read-only",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectHostname=yes",
    "ProtectClock=yes",
    "LockPersonality=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "UMask=0077",
];

/// systemd's command-line quoting: each argument in double quotes, with `\`, `"`, `$` and
/// `%` escaped (`$$`, `%%`: no variable or specifier expansion).
fn quote(arg: &str) -> String {
    let mut out = String::from("\"");
    for c in arg.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '$' => out.push_str("$$"),
            '%' => out.push_str("%%"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn agentbox_path() -> anyhow::Result<PathBuf> {
    std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .context("the path of this agentbox binary")
}

/// `agentbox run` flags a generated unit may carry.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RunFlags<'a> {
    pub sd_notify: Option<&'a str>,
    pub best_effort: bool,
}

fn exec_line(profile: &str, flags: RunFlags<'_>, command: &[String]) -> anyhow::Result<String> {
    let mut line = format!("{} run", agentbox_path()?.display());
    if let Some(who) = flags.sd_notify {
        line.push_str(&format!(" --sd-notify {}", quote(who)));
    }
    if flags.best_effort {
        line.push_str(" --best-effort");
    }
    line.push_str(&format!(" --profile {} --", quote(profile)));
    for arg in command {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    Ok(line)
}

pub(crate) fn unit_text(
    name: &str,
    profile: &str,
    user: bool,
    workspace: Option<&Path>,
    flags: RunFlags<'_>,
    command: &[String],
) -> anyhow::Result<String> {
    if name.is_empty() || name.contains(['/', ' ']) || name.ends_with(".service") {
        anyhow::bail!("--name {name}: a unit name without `.service`, `/` or spaces");
    }
    let mut out = format!(
        "# Generated by agentbox {}: `agentbox systemd unit --name {name} --profile {profile}`.\n\
         # What each directive is for: docs/systemd.md.\n\
         [Unit]\n\
         Description={name} (under agentbox, profile {profile})\n",
        env!("CARGO_PKG_VERSION")
    );
    if !user {
        out.push_str("After=network-online.target\nWants=network-online.target\n");
    }
    out.push_str("\n[Service]\n");
    out.push_str(
        "# agentbox is the main process and says READY=1 once the agent runs (or, with\n\
         # `run --sd-notify agent`, passes on the agent's); the agent's STATUS= and\n\
         # WATCHDOG=1 reach systemd through agentbox, filtered (docs/systemd.md).\n\
         Type=notify\nNotifyAccess=main\n",
    );
    // Logs go to $STATE_DIRECTORY/logs (agentbox reads STATE_DIRECTORY); %S is its root.
    out.push_str(&format!("StateDirectory=agentbox-{name}\n"));
    match workspace {
        Some(dir) => out.push_str(&format!(
            "WorkingDirectory={d}\nReadWritePaths={d}\n",
            d = dir.display()
        )),
        None => out.push_str(&format!("WorkingDirectory=%S/agentbox-{name}\n")),
    }
    out.push_str(&format!(
        "ExecStart={}\n",
        exec_line(profile, flags, command)?
    ));
    out.push_str(
        "# SIGTERM to agentbox, which forwards it to the agent and exits with its status; the\n\
         # stop timeout's SIGKILL then reaches everything left (agentbox's sandbox dies with it).\n\
         KillMode=mixed\nTimeoutStopSec=30\nRestart=on-failure\n",
    );
    out.push_str("# Hardening that complements agentbox (docs/systemd.md).\n");
    for directive in HARDENING {
        if user && directive.starts_with("Protect") && !directive.starts_with("ProtectSystem") {
            // Kernel-facing Protect* need privileges a user manager lacks.
            continue;
        }
        out.push_str(directive);
        out.push('\n');
    }
    out.push_str("\n[Install]\n");
    out.push_str(if user {
        "WantedBy=default.target\n"
    } else {
        "WantedBy=multi-user.target\n"
    });
    Ok(out)
}

/// The unit directories systemd reads, most specific first.
const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// The ExecStart= lines of `unit`'s [Service] section, as written (prefixes kept).
fn exec_starts(unit_file: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(unit_file)
        .with_context(|| format!("reading {}", unit_file.display()))?;
    let mut in_service = false;
    let mut lines: Vec<String> = Vec::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        if let (true, Some(value)) = (in_service, line.strip_prefix("ExecStart=")) {
            if value.is_empty() {
                lines.clear();
            } else {
                lines.push(value.to_string());
            }
        }
    }
    Ok(lines)
}

pub(crate) fn wrap_text(unit: &str, profile: &str) -> anyhow::Result<String> {
    let unit = if unit.contains('.') {
        unit.to_string()
    } else {
        format!("{unit}.service")
    };
    // A path names the unit file itself (one kept in a repository); a name is looked up.
    let file = if unit.contains('/') {
        PathBuf::from(&unit)
    } else {
        UNIT_DIRS
            .iter()
            .map(|d| Path::new(d).join(&unit))
            .find(|p| p.is_file())
            .with_context(|| format!("{unit}: not in {}", UNIT_DIRS.join(", ")))?
    };
    let unit = file
        .file_name()
        .map_or(unit.clone(), |n| n.to_string_lossy().into_owned());
    let starts = exec_starts(&file)?;
    if starts.is_empty() {
        anyhow::bail!("{}: no ExecStart= in [Service]", file.display());
    }
    let agentbox = agentbox_path()?;
    let mut out = format!(
        "# Generated by agentbox {}: `agentbox systemd wrap {unit} --profile {profile}`.\n\
         # Runs {}'s ExecStart under agentbox; remove this file to undo.\n\
         [Service]\nExecStart=\n",
        env!("CARGO_PKG_VERSION"),
        file.display()
    );
    for start in starts {
        // Keep systemd's prefixes (-@:+!) in front; `@` (argv[0] override) is not
        // expressible through agentbox and is refused.
        let body = start.trim_start_matches(['-', ':', '+', '!']);
        let prefix = &start[..start.len() - body.len()];
        if body.starts_with('@') {
            anyhow::bail!(
                "{}: ExecStart=@… (argv[0] override) cannot be wrapped",
                file.display()
            );
        }
        out.push_str(&format!(
            "ExecStart={prefix}{} run --profile {} -- {body}\n",
            agentbox.display(),
            quote(profile)
        ));
    }
    out.push_str("Type=notify\nNotifyAccess=main\nKillMode=mixed\n");
    Ok(out)
}

pub(crate) fn exec(cmd: SystemdCmd) -> anyhow::Result<ExitCode> {
    let (text, target) = match cmd {
        SystemdCmd::Unit {
            name,
            profile,
            user,
            workspace,
            install,
            sd_notify,
            best_effort,
            command,
        } => {
            let flags = RunFlags {
                sd_notify: sd_notify.as_deref(),
                best_effort,
            };
            let text = unit_text(&name, &profile, user, workspace.as_deref(), flags, &command)?;
            let dir = if user {
                let home = std::env::var_os("HOME").context("--user --install needs HOME")?;
                PathBuf::from(home).join(".config/systemd/user")
            } else {
                PathBuf::from("/etc/systemd/system")
            };
            (text, install.then(|| dir.join(format!("{name}.service"))))
        }
        SystemdCmd::Wrap {
            unit,
            profile,
            install,
        } => {
            let text = wrap_text(&unit, &profile)?;
            let unit = Path::new(&unit)
                .file_name()
                .map_or(unit.clone(), |n| n.to_string_lossy().into_owned());
            let unit = if unit.contains('.') {
                unit
            } else {
                format!("{unit}.service")
            };
            let path = Path::new("/etc/systemd/system")
                .join(format!("{unit}.d"))
                .join("agentbox.conf");
            (text, install.then_some(path))
        }
    };
    match target {
        None => print!("{text}"),
        Some(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "agentbox: wrote {}; now `systemctl daemon-reload`",
                path.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
