//! `agentbox gc`: reclaim what killed runs left behind, prune old audit logs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agent_sandbox::gc::{self, LogRetention};

/// Reclaim leftovers of runs whose supervisor was killed (private TMPDIRs; as root, empty
/// sandbox cgroups and eBPF map entries), and prune audit logs. Every `agentbox run` does
/// the reclaiming itself as it starts, and prunes its log directory as it ends.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  agentbox gc\n  agentbox gc --keep-days 7 --keep 200\n  sudo agentbox gc          also cgroups and eBPF map entries"
)]
pub(crate) struct GcArgs {
    /// Keep audit logs younger than this many days (default 30; `AGENTBOX_LOG_KEEP_DAYS`).
    #[arg(long, value_name = "DAYS")]
    pub keep_days: Option<u64>,
    /// Keep at most this many audit logs, newest first (default 1000; `AGENTBOX_LOG_KEEP`).
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
    /// The log directory to prune (default: where `agentbox run` writes them).
    #[arg(long, value_name = "DIR")]
    pub logs: Option<PathBuf>,
}

/// Retention from the flags, else the environment, else the defaults.
pub(crate) fn retention(days: Option<u64>, count: Option<usize>) -> LogRetention {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let default = LogRetention::default();
    LogRetention {
        max_age: days
            .or_else(|| env("AGENTBOX_LOG_KEEP_DAYS"))
            .map_or(default.max_age, |d| Duration::from_secs(d * 24 * 3600)),
        max_count: count
            .or_else(|| env("AGENTBOX_LOG_KEEP").map(|n| n as usize))
            .unwrap_or(default.max_count),
    }
}

pub(crate) fn exec(args: GcArgs) -> anyhow::Result<ExitCode> {
    let tmp = std::env::var_os("TMPDIR").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    let tmpdirs = gc::reclaim_tmpdirs(&tmp);
    let (cgroups, sandboxes) = gc::reclaim_kernel_state();
    let log_dir = args.logs.unwrap_or_else(crate::run::default_log_dir);
    let logs = gc::prune_logs(&log_dir, retention(args.keep_days, args.keep));
    for path in &tmpdirs {
        println!("removed TMPDIR of a dead run: {}", path.display());
    }
    for path in &cgroups {
        println!("removed empty sandbox cgroup: {}", path.display());
    }
    if !sandboxes.is_empty() {
        println!(
            "removed the eBPF map entries of {} dead sandbox(es): {sandboxes:?}",
            sandboxes.len()
        );
    }
    println!(
        "pruned {} audit log(s) in {}",
        logs.len(),
        log_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
