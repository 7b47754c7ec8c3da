//! `agentbox selftest`: run the escape suite against this machine's sandbox (see
//! `agentbox_selftest`), or, hidden, one attack from inside a sandbox.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use agentbox_selftest::{self as selftest, Options, CATALOGUE};

/// Attack this machine's sandbox with the built-in escape suite and report what holds.
///
/// Each technique runs as `agentbox run --profile P -- agentbox selftest --attack NAME` in a
/// throwaway HOME and workspace with planted fake secrets; the result is `held` only when the
/// attempt failed AND the audit log holds the expected denial. Exit status 0 when every
/// guarantee enforced here held, 1 otherwise.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  agentbox selftest\n  agentbox selftest --only unix-symlink-redirect --keep\n  agentbox selftest --markdown > security.md"
)]
pub(crate) struct SelftestArgs {
    /// Profile under test: a built-in name or a TOML file.
    #[arg(long, short = 'p', value_name = "NAME|FILE", default_value = "default")]
    pub profile: String,
    /// Print the reports as JSON.
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,
    /// Print a Markdown table (for docs/security.md).
    #[arg(long)]
    pub markdown: bool,
    /// Run only this technique. Repeatable.
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
    /// List the techniques and exit.
    #[arg(long)]
    pub list: bool,
    /// Run each technique with `agentbox run --best-effort`: on a kernel that lacks a guarantee
    /// the profile needs, measure what holds instead of stopping at "refusing to start".
    #[arg(long)]
    pub best_effort: bool,
    /// Keep each technique's scratch directory (HOME, workspace, audit log) for inspection.
    #[arg(long)]
    pub keep: bool,
    /// Inside a sandbox: run one attack and print its report (used by the suite itself).
    #[arg(long, hide = true, value_name = "NAME", requires = "ctx")]
    pub attack: Option<String>,
    /// The attack's context, JSON (used by the suite itself).
    #[arg(long, hide = true)]
    pub ctx: Option<String>,
}

pub(crate) fn exec(args: SelftestArgs) -> anyhow::Result<ExitCode> {
    if let (Some(name), Some(ctx)) = (&args.attack, &args.ctx) {
        selftest::attack_main(name, ctx)?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.list {
        for s in CATALOGUE {
            println!("{:<22} {:<9} {}", s.name, s.family, s.technique);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let exe: PathBuf = std::env::current_exe().context("locating the agentbox binary")?;
    let mut opts = Options::new(exe, &args.profile);
    opts.keep = args.keep;
    opts.best_effort = args.best_effort;
    let reports = selftest::run_all(&opts, &args.only)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else if args.markdown {
        let kernel = format!("Linux {}", agent_sandbox::kernel_release());
        print!("{}", selftest::render_markdown(&reports, &kernel));
    } else {
        print!("{}", selftest::render_table(&reports));
    }
    Ok(if reports.iter().any(|r| r.verdict.is_failure()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
