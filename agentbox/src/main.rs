//! Command-line interface of the `agentbox` binary. Each subcommand lives in its own file and
//! calls into the library; this file only dispatches.

mod audit_cmd;
mod doctor_cmd;
mod events_cmd;
mod gc_cmd;
mod learn_cmd;
mod profile_cmd;
mod run;
mod selftest_cmd;
mod systemd_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// agentbox confines an AI agent (or any command) at the kernel boundary — Landlock, seccomp,
/// and eBPF where the kernel allows — and writes every blocked attempt to one audit log.
#[derive(Debug, Parser)]
#[command(name = "agentbox", version, propagate_version = true)]
#[command(after_help = "Examples:\n  \
  agentbox doctor                         what this machine can guarantee\n  \
  agentbox run -- python agent.py         run under the built-in `default` profile\n  \
  agentbox run --profile strict -- sh     a stricter built-in profile\n  \
  agentbox profile show default           the fully resolved profile\n  \
  agentbox audit verify run.jsonl         check an audit log's hash chain")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the `run` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run a command inside a sandbox.
    Run(run::RunArgs),
    /// Run a command in audit mode and write the smallest profile that would have allowed it.
    Learn(learn_cmd::LearnArgs),
    /// Report which guarantees this kernel and these privileges allow, and why.
    Doctor(doctor_cmd::DoctorArgs),
    /// List, show, check profiles; print their JSON Schema.
    #[command(subcommand)]
    Profile(profile_cmd::ProfileCmd),
    /// Work with audit logs.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCmd),
    /// Attack this machine's sandbox with the built-in escape suite and report what holds.
    Selftest(selftest_cmd::SelftestArgs),
    /// Reclaim what killed runs left behind (TMPDIRs, cgroups, eBPF entries); prune old logs.
    Gc(gc_cmd::GcArgs),
    /// Read an audit log: process tree, denials by rule with counts; --follow a live run.
    Events(events_cmd::EventsArgs),
    /// Generate systemd units (or drop-ins for existing units) that run under agentbox.
    #[command(subcommand)]
    Systemd(systemd_cmd::SystemdCmd),
    /// Print a shell completion script.
    #[command(
        after_help = "Example:\n  agentbox completions bash > /etc/bash_completion.d/agentbox\n  \
                            agentbox completions zsh > \"${fpath[1]}/_agentbox\""
    )]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), generated from these --help texts.
    #[command(after_help = "Example:\n  agentbox man | man -l -")]
    Man,
}

/// agentbox(1), then a page per subcommand (agentbox-run(1), ...), roff on stdout.
fn man() -> anyhow::Result<ExitCode> {
    let cmd = <Cli as clap::CommandFactory>::command();
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
    for sub in cmd.get_subcommands() {
        // clap names are `&'static str` without its `string` feature; one page each, once.
        let name: &'static str = Box::leak(format!("agentbox-{}", sub.get_name()).into_boxed_str());
        clap_mangen::Man::new(sub.clone().name(name)).render(&mut out)?;
    }
    std::io::Write::write_all(&mut std::io::stdout(), &out)?;
    Ok(ExitCode::SUCCESS)
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    let result = match cli.command {
        Command::Run(args) => run::exec(args),
        Command::Learn(args) => learn_cmd::exec(args),
        Command::Doctor(args) => doctor_cmd::exec(args),
        Command::Profile(cmd) => profile_cmd::exec(cmd),
        Command::Audit(cmd) => audit_cmd::exec(cmd),
        Command::Selftest(args) => selftest_cmd::exec(args),
        Command::Gc(args) => gc_cmd::exec(args),
        Command::Events(args) => events_cmd::exec(args),
        Command::Systemd(cmd) => systemd_cmd::exec(cmd),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "agentbox", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => man(),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("agentbox: error: {err:#}");
            // 125, like env(1) and podman: agentbox itself failed, the command did not run.
            ExitCode::from(125)
        }
    }
}

/// Prints clap's message (help and version go to stdout, exit 0) and, for the commonest
/// mistake, the fix: a command given to `run` without `--` before it. Misuse exits 125, like
/// every failure of agentbox itself, so scripts tell it from the command's own status.
fn usage_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        let _ = err.print();
        return ExitCode::SUCCESS;
    }
    let _ = err.print();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("run") && !args.iter().any(|a| a == "--") {
        let (options, command): (Vec<&String>, Vec<&String>) = {
            // Options that take a value (`--profile strict`) keep it.
            let takes_value = |a: &str| {
                !a.contains('=')
                    && matches!(
                        a,
                        "-p" | "--profile"
                            | "--allow-read"
                            | "--allow-write"
                            | "--allow-exec"
                            | "--allow-net"
                            | "--allow-bind"
                            | "--allow-unix"
                            | "--keep-env"
                            | "--log"
                            | "--workspace"
                            | "--tmpdir"
                            | "--user"
                    )
            };
            let mut first_command = args.len();
            let mut i = 1;
            while i < args.len() {
                if !args[i].starts_with('-') {
                    first_command = i;
                    break;
                }
                i += if takes_value(&args[i]) { 2 } else { 1 };
            }
            (
                args[1..first_command].iter().collect(),
                args[first_command..].iter().collect(),
            )
        };
        if !command.is_empty() {
            let join = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ");
            let options = join(&options);
            let space = if options.is_empty() { "" } else { " " };
            eprintln!(
                "\nhint: the command goes after `--`: agentbox run {options}{space}-- {}",
                join(&command)
            );
        }
    }
    ExitCode::from(125)
}
