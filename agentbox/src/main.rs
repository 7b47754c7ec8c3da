//! Command-line interface of the `agentbox` binary. Each subcommand lives in its own file and
//! calls into the library; this file only dispatches.

mod audit_cmd;
mod doctor_cmd;
mod profile_cmd;
mod run;
mod selftest_cmd;

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

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a command inside a sandbox.
    Run(run::RunArgs),
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
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::exec(args),
        Command::Doctor(args) => doctor_cmd::exec(args),
        Command::Profile(cmd) => profile_cmd::exec(cmd),
        Command::Audit(cmd) => audit_cmd::exec(cmd),
        Command::Selftest(args) => selftest_cmd::exec(args),
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
